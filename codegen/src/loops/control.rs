//! Control flow at the loop-and-buffer level: where the values that cross a `for` iteration
//! or an `if` merge live, and how a `yield` hands its values over.
//!
//! A carried (`for`) or merged (`if`) value has one home for the whole op: a scalar slot of
//! the target (a Cranelift `Variable`, an LLVM stack slot) or a pinned arena buffer, which
//! every iteration / branch writes and every later read takes the value from. A `yield` must
//! read all its sources before it overwrites any home: a source that is a view of another
//! carried buffer (`acc, prev = prev, acc`) is first copied to a temporary, a source already
//! in its own home, contiguous, is not copied at all.
//!
//! The decisions and their order are taken here, once; each generator implements
//! [`ControlEmit`] to emit its own instructions for them.

use opc_ir::{DType, Kernel, Op, ValueId};

use super::plan::is_contiguous;

/// Where a carried or merged value lives: a scalar slot `S` of the target, or an arena buffer
/// (its slot offset, in the generator's units) holding the tile row-major.
#[derive(Clone, Debug)]
pub(crate) enum Home<S> {
    Scalar(S),
    Buf(u32),
}

/// What the control-flow decisions need a generator to emit.
pub(crate) trait ControlEmit {
    /// A scalar value (an SSA value or its text).
    type Val;
    /// A scalar's home across blocks.
    type Slot: Clone;

    fn kernel(&self) -> &Kernel;
    fn numel(&self, v: ValueId) -> usize {
        self.kernel().ty(v).numel()
    }
    fn shape_of(&self, v: ValueId) -> Vec<usize> {
        self.kernel().ty(v).shape.clone()
    }
    fn dtype_of(&self, v: ValueId) -> DType {
        self.kernel().ty(v).dtype
    }
    /// `v`'s arena buffer and strides, if it is held in one.
    fn buffer(&self, v: ValueId) -> Option<(u32, Vec<i64>)>;
    /// `v` as a scalar value (emitting a read if needed); `None` for a tile.
    fn scalar(&mut self, v: ValueId) -> Option<Self::Val>;
    /// A new scalar home for dtype `d`.
    fn new_slot(&mut self, d: DType) -> Self::Slot;
    fn write_slot(&mut self, s: &Self::Slot, x: Self::Val);
    /// Define `v` as the value `s` holds (a body's carried argument, an `if` result).
    fn bind_slot(&mut self, v: ValueId, s: &Self::Slot);
    /// Define `v` as the value `s` holds on leaving a loop (a `for` result); by default as
    /// [`Self::bind_slot`].
    fn read_slot(&mut self, v: ValueId, s: &Self::Slot) {
        self.bind_slot(v, s)
    }
    /// Define `v` as the row-major tile in buffer `off`.
    fn bind_buf(&mut self, v: ValueId, off: u32);
    /// A fresh arena buffer of `numel` elements.
    fn alloc_buf(&mut self, numel: usize) -> u32;
    /// Keep buffer `off` for good: it is a home, written on every path.
    fn pin_buf(&mut self, off: u32);
    /// Copy `v`'s elements into the contiguous buffer `dst`.
    fn copy_value(&mut self, v: ValueId, dst: u32);
    /// Copy the contiguous buffer `from`, holding a tile of `v`'s type, into `dst`.
    fn copy_buf(&mut self, v: ValueId, from: u32, dst: u32);
}

/// A fresh pinned buffer for the tile `v`.
fn home_buf<E: ControlEmit>(e: &mut E, v: ValueId) -> u32 {
    let b = e.alloc_buf(e.numel(v));
    e.pin_buf(b);
    b
}

/// Homes of a `for` op's carried values, initialized from its init operands (`args[3..]`):
/// a slot for each scalar, a pinned buffer for each tile.
pub(crate) fn carry_in<E: ControlEmit>(e: &mut E, op: &Op) -> Vec<Home<E::Slot>> {
    let body = &op.regions[0];
    let mut homes = vec![];
    for (&init, &ra) in op.args[3..].iter().zip(&body.args[1..]) {
        if e.shape_of(ra).is_empty() {
            let x = e.scalar(init).expect("a scalar init");
            let s = e.new_slot(e.dtype_of(ra));
            e.write_slot(&s, x);
            homes.push(Home::Scalar(s));
        } else {
            let c = home_buf(e, ra);
            e.copy_value(init, c);
            homes.push(Home::Buf(c));
        }
    }
    homes
}

/// Homes of an `if` op's results: a slot for each scalar; for each tile the buffer
/// `adopt(e, i)` offers (one the `if` may merge into in place; each adopted once), else a
/// fresh one. Both are pinned.
pub(crate) fn merge_homes<E: ControlEmit>(e: &mut E, op: &Op, adopt: impl Fn(&E, usize) -> Option<u32>) -> Vec<Home<E::Slot>> {
    let mut homes = vec![];
    let mut adopted: Vec<u32> = vec![];
    for (i, &r) in op.results.iter().enumerate() {
        if e.shape_of(r).is_empty() {
            let s = e.new_slot(e.dtype_of(r));
            homes.push(Home::Scalar(s));
        } else if let Some(b) = adopt(e, i).filter(|b| !adopted.contains(b)) {
            adopted.push(b);
            e.pin_buf(b);
            homes.push(Home::Buf(b));
        } else {
            homes.push(Home::Buf(home_buf(e, r)));
        }
    }
    homes
}

/// Define `vals` (a body's carried arguments, an `if`'s results) from their homes.
pub(crate) fn bind<E: ControlEmit>(e: &mut E, vals: &[ValueId], homes: &[Home<E::Slot>]) {
    for (&v, h) in vals.iter().zip(homes) {
        match h {
            Home::Scalar(s) => e.bind_slot(v, s),
            Home::Buf(b) => e.bind_buf(v, *b),
        }
    }
}

/// Define a `for` op's results from the homes of its carried values, after the loop.
pub(crate) fn carry_out<E: ControlEmit>(e: &mut E, results: &[ValueId], homes: &[Home<E::Slot>]) {
    for (&v, h) in results.iter().zip(homes) {
        match h {
            Home::Scalar(s) => e.read_slot(v, s),
            Home::Buf(b) => e.bind_buf(v, *b),
        }
    }
}

/// Hand the yielded `srcs` to their `homes`. Sources that read one of the home buffers are
/// copied to temporaries first, and scalars read, so no home is overwritten before every
/// source has been read; a source already contiguous in its own home is left there.
pub(crate) fn yield_into<E: ControlEmit>(e: &mut E, srcs: &[ValueId], homes: &[Home<E::Slot>]) {
    let targets: Vec<u32> = homes.iter().filter_map(|h| if let Home::Buf(b) = h { Some(*b) } else { None }).collect();
    let mut staged: Vec<Option<u32>> = vec![];
    for (&src, h) in srcs.iter().zip(homes) {
        let Home::Buf(dst) = *h else {
            staged.push(None);
            continue;
        };
        staged.push(match e.buffer(src) {
            Some((off, strides)) if off == dst && is_contiguous(&e.shape_of(src), &strides) => Some(dst),
            Some((off, _)) if targets.contains(&off) => {
                let tmp = e.alloc_buf(e.numel(src));
                e.copy_value(src, tmp);
                Some(tmp)
            }
            _ => None,
        });
    }
    let mut scalars: Vec<Option<E::Val>> =
        srcs.iter().zip(homes).map(|(&s, h)| if matches!(h, Home::Scalar(_)) { e.scalar(s) } else { None }).collect();
    for (i, (&src, h)) in srcs.iter().zip(homes).enumerate() {
        match h {
            Home::Scalar(s) => e.write_slot(s, scalars[i].take().expect("a scalar yield")),
            Home::Buf(dst) => match staged[i] {
                Some(from) if from == *dst => {}
                Some(tmp) => e.copy_buf(src, tmp, *dst),
                None => e.copy_value(src, *dst),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opc_ir::{OpKind, TileType};

    /// Records what the decisions ask for; values 0..n have the given types and buffers.
    struct Log {
        k: Kernel,
        bufs: Vec<Option<(u32, Vec<i64>)>>,
        next: u32,
        out: Vec<String>,
    }

    impl ControlEmit for Log {
        type Val = String;
        type Slot = u32;
        fn kernel(&self) -> &Kernel {
            &self.k
        }
        fn buffer(&self, v: ValueId) -> Option<(u32, Vec<i64>)> {
            self.bufs[v.0 as usize].clone()
        }
        fn scalar(&mut self, v: ValueId) -> Option<String> {
            self.out.push(format!("read %{}", v.0));
            Some(format!("%{}", v.0))
        }
        fn new_slot(&mut self, _: DType) -> u32 {
            self.next += 1;
            self.next
        }
        fn write_slot(&mut self, s: &u32, x: String) {
            self.out.push(format!("slot{s} = {x}"));
        }
        fn bind_slot(&mut self, _: ValueId, _: &u32) {}
        fn bind_buf(&mut self, _: ValueId, _: u32) {}
        fn alloc_buf(&mut self, _: usize) -> u32 {
            self.next += 100;
            self.out.push(format!("alloc b{}", self.next));
            self.next
        }
        fn pin_buf(&mut self, off: u32) {
            self.out.push(format!("pin b{off}"));
        }
        fn copy_value(&mut self, v: ValueId, dst: u32) {
            self.out.push(format!("copy %{} -> b{dst}", v.0));
        }
        fn copy_buf(&mut self, _: ValueId, from: u32, dst: u32) {
            self.out.push(format!("copy b{from} -> b{dst}"));
        }
    }

    fn log(types: &[&[usize]], bufs: Vec<Option<(u32, Vec<i64>)>>) -> Log {
        let mut k = Kernel::new("t");
        for s in types {
            k.new_value(TileType::new(DType::F32, s.to_vec()));
        }
        Log { k, bufs, next: 0, out: vec![] }
    }

    #[test]
    fn swapped_tiles_go_through_temporaries() {
        // homes b1, b2 (tiles [2, 4]) and a scalar slot; `yield %1, %0, %2`: %1 reads b2, %0
        // reads b1 (both another home), %2 a scalar.
        let rm = vec![4, 1];
        let mut e = log(&[&[2, 4], &[2, 4], &[]], vec![Some((1, rm.clone())), Some((2, rm)), None]);
        let homes = vec![Home::Buf(1), Home::Buf(2), Home::Scalar(7)];
        yield_into(&mut e, &[ValueId(1), ValueId(0), ValueId(2)], &homes);
        assert_eq!(
            e.out,
            [
                "alloc b100",
                "copy %1 -> b100",
                "alloc b200",
                "copy %0 -> b200",
                "read %2",
                "copy b100 -> b1",
                "copy b200 -> b2",
                "slot7 = %2",
            ]
        );
    }

    #[test]
    fn a_value_in_its_own_home_is_not_copied() {
        // %0 is contiguous in b1 (its home); %1 is a transposed view of b1, yielded to b2.
        let mut e = log(&[&[2, 4], &[4, 2]], vec![Some((1, vec![4, 1])), Some((1, vec![1, 4]))]);
        yield_into(&mut e, &[ValueId(0), ValueId(1)], &[Home::Buf(1), Home::Buf(2)]);
        assert_eq!(e.out, ["alloc b100", "copy %1 -> b100", "copy b100 -> b2"]);
    }

    #[test]
    fn if_homes_adopt_each_buffer_once() {
        // Results %0, %1 (tiles) and %2 (scalar); both tiles are offered buffer 5.
        let mut e = log(&[&[2, 4], &[2, 4], &[]], vec![None, None, None]);
        let op = Op::new(OpKind::If, vec![], vec![ValueId(0), ValueId(1), ValueId(2)]);
        let homes = merge_homes(&mut e, &op, |_, _| Some(5));
        assert!(matches!(homes[..], [Home::Buf(5), Home::Buf(100), Home::Scalar(101)]), "{homes:?}");
        assert_eq!(e.out, ["pin b5", "alloc b100", "pin b100"]);
    }
}
