//! The launches of a run, for autotuning (`opc tune --model`): every distinct launch of a
//! library kernel (file, kernel, instance, dims, scalar values) with how often it ran and for
//! how long, plus a copy of its i32 input tensors from the first time (expert offsets, block
//! tables, token ids: data that decides how much work a launch does, which random inputs
//! would not reproduce). Off unless asked for ([`crate::Ops::with_launch_log`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use opc_codegen::Executable;
use opc_dsl::Instance;
use opc_ir::{Arg, ArgRef, DType, Kernel, LaunchArg, ParamKind, Tensor};

/// i32 inputs larger than this many elements are not copied (the tuner's random ones serve).
const MAX_COPIED: usize = 1 << 20;

/// One distinct launch.
#[derive(Clone, Debug)]
pub struct Launch {
    /// Library file stem (`Ops::source`).
    pub file: String,
    pub kernel: String,
    /// The instance the driver picked (dtypes, consts, heuristic tunables).
    pub inst: Instance,
    /// The dynamic dims, declaration order.
    pub dims: Vec<(String, i64)>,
    /// Scalar arguments as text that parses back to the same value.
    pub scalars: Vec<(String, String)>,
    /// i32 input tensors of the first launch.
    pub int_inputs: Vec<(String, Tensor)>,
    pub count: u64,
    pub seconds: f64,
}

type LaunchKey = (String, String, Instance, Vec<(String, i64)>, Vec<(String, String)>);

/// The distinct launches so far.
#[derive(Default)]
pub struct LaunchLog {
    launches: Mutex<(HashMap<LaunchKey, usize>, Vec<Launch>)>,
}

impl LaunchLog {
    /// Every distinct launch, longest total time first.
    pub fn launches(&self) -> Vec<Launch> {
        let mut v = self.launches.lock().unwrap_or_else(|e| e.into_inner()).1.clone();
        v.sort_by(|a, b| b.seconds.total_cmp(&a.seconds));
        v
    }

    fn record<A: LaunchArg>(&self, l: &Logged, args: &[A], secs: f64) {
        let k = l.inner.kernel();
        let Ok(syms) = opc_ir::launch::bind_dims(k, args) else { return };
        let dims = opc_tune::db::dynamic_dims(k, &syms);
        let scalars: Vec<(String, String)> = k
            .params
            .iter()
            .zip(args)
            .filter_map(|(p, a)| {
                let v = match a.view() {
                    ArgRef::F32(x) => format!("{x}"),
                    ArgRef::I32(x) => format!("{x}"),
                    ArgRef::Bool(b) => format!("{b}"),
                    _ => return None,
                };
                Some((p.name.clone(), v))
            })
            .collect();
        let key: LaunchKey = (l.file.clone(), l.kernel.clone(), l.inst.clone(), dims, scalars);
        let mut g = self.launches.lock().unwrap_or_else(|e| e.into_inner());
        let (index, list) = &mut *g;
        if let Some(&i) = index.get(&key) {
            list[i].count += 1;
            list[i].seconds += secs;
            return;
        }
        let int_inputs = k
            .params
            .iter()
            .zip(args)
            .filter_map(|(p, a)| match (&p.kind, a.view()) {
                (ParamKind::Tensor { output: false, .. }, ArgRef::In(t)) if t.dtype == DType::I32 && t.numel() <= MAX_COPIED => {
                    Some((p.name.clone(), t.clone()))
                }
                _ => None,
            })
            .collect();
        index.insert(key.clone(), list.len());
        list.push(Launch { file: key.0, kernel: key.1, inst: key.2, dims: key.3, scalars: key.4, int_inputs, count: 1, seconds: secs });
    }
}

/// A compiled kernel whose launches are written to a [`LaunchLog`].
pub(crate) struct Logged {
    pub inner: Arc<dyn Executable>,
    pub file: String,
    pub kernel: String,
    pub inst: Instance,
    pub log: Arc<LaunchLog>,
}

impl Executable for Logged {
    fn launch(&self, args: &mut [Arg]) -> opc_codegen::Result<()> {
        let t0 = Instant::now();
        self.inner.launch(args)?;
        self.log.record(self, args, t0.elapsed().as_secs_f64());
        Ok(())
    }

    fn launch_refs(&self, args: &mut [ArgRef<'_>]) -> opc_codegen::Result<()> {
        let t0 = Instant::now();
        self.inner.launch_refs(args)?;
        self.log.record(self, args, t0.elapsed().as_secs_f64());
        Ok(())
    }

    fn kernel(&self) -> &Kernel {
        self.inner.kernel()
    }
}
