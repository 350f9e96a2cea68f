//! The launch pool of the JIT targets (`cpu`, `llvm`): one launch's programs run on the calling
//! thread and on persistent workers that keep spinning for a while after each launch.
//!
//! Why not rayon alone: rayon's idle workers go to sleep within microseconds, and waking one
//! (a futex, then the hypervisor scheduling the other vCPU) costs 10 to 30 µs here, more than a
//! batched-decode norm, rope or KV write takes in all. A model step makes a few hundred launches
//! microseconds apart, so these workers poll for [`spin`] after each launch before they park,
//! as OpenMP runtimes (`KMP_BLOCKTIME`) and llama.cpp's thread pool do. While polling they
//! yield the CPU to any other runnable thread, so a busy process (a test suite) loses little.
//!
//! One launch owns the pool at a time; a launch made meanwhile by another thread runs on rayon.
//! Programs are handed out from an atomic counter in shrinking runs (guided self-scheduling),
//! so uneven programs balance and thousands of tiny ones cost few atomic operations.
//!
//! Protocol. `STATE` packs an open bit, the launch's epoch and the count of workers inside the
//! launch. The owner publishes the job (`JOB`), then sets the open bit with a new epoch. A worker
//! enters by incrementing the count while the bit is set (a compare-exchange, so it cannot enter
//! a closed launch) and only then reads `JOB`. The owner, out of programs, clears the bit and
//! waits for the count to reach zero before its stack frame (the job and the program closure)
//! goes away. A parked worker is unparked when a launch opens but never waited for.

use opc_ir::launch::LaunchError;
use rayon::prelude::*;
use std::any::Any;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering::*};
use std::sync::{Mutex, OnceLock};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

/// One launch's program body: runs program `p`.
pub(crate) type Program<'a> = dyn Fn(usize) -> Result<(), LaunchError> + Sync + 'a;

/// Set while a launch's programs may still be handed out.
const OPEN: u64 = 1 << 63;
/// The epoch field: bits 32 to 62, one step per launch.
const EPOCH: u64 = 1 << 32;
const EPOCH_MASK: u64 = !OPEN & !(EPOCH - 1);
/// The workers inside the current launch: bits 0 to 31.
const USERS_MASK: u64 = EPOCH - 1;

static STATE: AtomicU64 = AtomicU64::new(0);
static JOB: AtomicPtr<Job<'static>> = AtomicPtr::new(std::ptr::null_mut());
/// Held by the thread whose launch owns the pool.
static BUSY: AtomicBool = AtomicBool::new(false);

/// How long a worker polls for the next launch before it parks: `OPC_SPIN_US` microseconds,
/// default 2000 (longer than the host work between two decode steps).
fn spin() -> Duration {
    static SPIN: OnceLock<Duration> = OnceLock::new();
    *SPIN.get_or_init(|| {
        let us = std::env::var("OPC_SPIN_US").ok().and_then(|v| v.parse().ok()).unwrap_or(2000);
        Duration::from_micros(us)
    })
}

/// One launch: its programs `0..total`, the next one to hand out, and its outcome.
struct Job<'a> {
    total: usize,
    /// The threads that may take part: the workers and the launching thread.
    threads: usize,
    next: AtomicUsize,
    program: &'a Program<'a>,
    error: Mutex<Option<LaunchError>>,
    panic: Mutex<Option<Box<dyn Any + Send>>>,
}

impl Job<'_> {
    /// The next programs to run: guided self-scheduling, a share of what is left so that many tiny
    /// programs cost few atomic operations and the last ones still balance across threads.
    fn grab(&self) -> Option<std::ops::Range<usize>> {
        let mut cur = self.next.load(Relaxed);
        loop {
            if cur >= self.total {
                return None;
            }
            let take = ((self.total - cur) / (2 * self.threads)).max(1);
            match self.next.compare_exchange_weak(cur, cur + take, Relaxed, Relaxed) {
                Ok(_) => return Some(cur..cur + take),
                Err(now) => cur = now,
            }
        }
    }

    /// Run programs until none is left or one has failed (the rest are then skipped, as rayon's
    /// `try_for_each` does).
    fn work(&self) {
        while let Some(range) = self.grab() {
            let stop = match catch_unwind(AssertUnwindSafe(|| range.clone().try_for_each(self.program))) {
                Ok(Ok(())) => false,
                Ok(Err(e)) => {
                    self.error.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(e);
                    true
                }
                Err(payload) => {
                    self.panic.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(payload);
                    true
                }
            };
            if stop {
                self.next.fetch_max(self.total, Relaxed);
                return;
            }
        }
    }
}

/// The workers: a thread handle and a parked flag each.
struct Pool {
    workers: Vec<(Thread, AtomicBool)>,
}

fn pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| {
        let n = rayon::current_num_threads().saturating_sub(1);
        let workers = (0..n)
            .filter_map(|i| thread::Builder::new().name(format!("opc-launch-{i}")).spawn(move || worker(i)).ok())
            .map(|h| (h.thread().clone(), AtomicBool::new(false)))
            .collect();
        Pool { workers }
    })
}

fn worker(me: usize) {
    let mut seen = 0u64;
    loop {
        let mut idle_since = Instant::now();
        let mut polls = 0u32;
        while idle_since.elapsed() < spin() {
            let s = STATE.load(Acquire);
            if s & OPEN != 0 && s & EPOCH_MASK != seen {
                if STATE.compare_exchange_weak(s, s + 1, AcqRel, Relaxed).is_ok() {
                    seen = s & EPOCH_MASK;
                    // SAFETY: the launch is open and counts this worker, so its owner keeps the
                    // job alive until the decrement below.
                    unsafe { &*JOB.load(Acquire) }.work();
                    STATE.fetch_sub(1, Release);
                    idle_since = Instant::now();
                }
                continue;
            }
            polls += 1;
            if polls % 64 == 0 {
                thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
        let parked = &pool().workers[me].1;
        parked.store(true, SeqCst);
        let s = STATE.load(SeqCst);
        if !(s & OPEN != 0 && s & EPOCH_MASK != seen) {
            thread::park();
        }
        parked.store(false, SeqCst);
    }
}

/// Run `program(p)` for every `p` in `0..total` across the calling thread and the pool; the first
/// error is returned and the remaining programs are skipped. A panic in a program is resumed
/// on the calling thread once every worker has left the launch.
pub(crate) fn run_programs(total: usize, program: &Program<'_>) -> Result<(), LaunchError> {
    let pool = pool();
    if pool.workers.is_empty() || BUSY.compare_exchange(false, true, Acquire, Relaxed).is_err() {
        return (0..total).into_par_iter().try_for_each(program);
    }
    let job = Job { total, threads: pool.workers.len() + 1, next: AtomicUsize::new(0), program, error: Mutex::new(None), panic: Mutex::new(None) };
    // The pointer is published only while the launch is open, and the launch is closed and
    // emptied before `job` goes out of scope (below), so the lifetime is never outlived.
    JOB.store((&job as *const Job<'_>).cast::<Job<'static>>().cast_mut(), Release);
    let epoch = (STATE.load(Relaxed) & EPOCH_MASK).wrapping_add(EPOCH) & EPOCH_MASK;
    STATE.store(OPEN | epoch, SeqCst);
    for (t, parked) in &pool.workers {
        if parked.load(SeqCst) {
            t.unpark();
        }
    }
    job.work();
    STATE.fetch_and(!OPEN, AcqRel);
    while STATE.load(Acquire) & USERS_MASK != 0 {
        std::hint::spin_loop();
    }
    JOB.store(std::ptr::null_mut(), Release);
    BUSY.store(false, Release);
    if let Some(payload) = job.panic.into_inner().unwrap_or_else(|e| e.into_inner()) {
        resume_unwind(payload);
    }
    match job.error.into_inner().unwrap_or_else(|e| e.into_inner()) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    fn exec_error(p: usize) -> LaunchError {
        LaunchError::Exec { kernel: "k".into(), msg: format!("program {p}") }
    }

    /// Every program runs exactly once, for launches of 1 to thousands of programs, made back to
    /// back and after the workers have parked.
    #[test]
    fn every_program_runs_once() {
        for (i, total) in [1usize, 2, 3, 7, 64, 1000, 4097].into_iter().enumerate() {
            if i == 3 {
                thread::sleep(spin() + Duration::from_millis(5));
            }
            let hits: Vec<AtomicU32> = (0..total).map(|_| AtomicU32::new(0)).collect();
            run_programs(total, &|p| {
                hits[p].fetch_add(1, Relaxed);
                Ok(())
            })
            .unwrap();
            assert!(hits.iter().all(|h| h.load(Relaxed) == 1), "{total} programs");
        }
    }

    /// A failing program's error comes back and stops the launch; the next launch is unaffected.
    #[test]
    fn error_is_returned() {
        let ran = AtomicUsize::new(0);
        let r = run_programs(10_000, &|p| {
            ran.fetch_add(1, Relaxed);
            if p == 17 { Err(exec_error(p)) } else { Ok(()) }
        });
        assert_eq!(r.unwrap_err().to_string(), "kernel `k`: program 17");
        assert!(ran.load(Relaxed) < 10_000, "the programs after the failure were skipped");
        run_programs(8, &|_| Ok(())).unwrap();
    }

    /// A panic in a program reaches the launching thread after the launch is closed, and the
    /// pool keeps working.
    #[test]
    fn panic_is_resumed_on_the_caller() {
        let r = catch_unwind(|| run_programs(64, &|p| if p == 40 { panic!("program forty") } else { Ok(()) }));
        let payload = r.unwrap_err();
        assert_eq!(payload.downcast_ref::<&str>(), Some(&"program forty"));
        let n = AtomicUsize::new(0);
        run_programs(64, &|_| {
            n.fetch_add(1, Relaxed);
            Ok(())
        })
        .unwrap();
        assert_eq!(n.load(Relaxed), 64);
    }

    /// Launches from several threads at once (one owns the pool, the others go to rayon) each
    /// run all of their own programs.
    #[test]
    fn concurrent_launches() {
        thread::scope(|s| {
            for t in 0..4usize {
                s.spawn(move || {
                    for round in 0..200usize {
                        let total = 1 + (t * 31 + round * 7) % 300;
                        let sum = AtomicUsize::new(0);
                        run_programs(total, &|p| {
                            sum.fetch_add(p + 1, Relaxed);
                            Ok(())
                        })
                        .unwrap();
                        assert_eq!(sum.load(Relaxed), total * (total + 1) / 2);
                    }
                });
            }
        });
    }
}
