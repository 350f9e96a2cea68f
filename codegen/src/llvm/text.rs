//! A small writer of textual LLVM IR for one function: fresh SSA names, labels, the current
//! block (for `phi` operands), entry-block `alloca`s, and type / constant spelling.
//!
//! Everything the `llvm` target generates goes through here, so the printed module
//! (`OPC_LLVM_DUMP=1`) reads like hand-written IR: `%vN` values, `LN` labels, one instruction
//! per line. Vector types are spelled `<L x T>`; a value with `lanes == 0` is a scalar.

use std::fmt::Write;

/// The function being written.
pub(super) struct Fb {
    body: String,
    allocas: String,
    next: u32,
    /// Label of the block instructions are appended to.
    pub cur: String,
}

/// `T` or `<lanes x T>`.
pub(super) fn vt(base: &str, lanes: u32) -> String {
    if lanes == 0 {
        base.to_string()
    } else {
        format!("<{lanes} x {base}>")
    }
}

/// A constant operand of type `vt(base, lanes)`: the literal, or its splat.
pub(super) fn cst(base: &str, lanes: u32, lit: &str) -> String {
    if lanes == 0 {
        lit.to_string()
    } else {
        format!("splat ({base} {lit})")
    }
}

/// An f32 literal as LLVM spells it exactly (the hex of the equal f64).
pub(super) fn flit(x: f32) -> String {
    format!("0x{:016X}", (x as f64).to_bits())
}

/// The `llvm.*` overload suffix of a float / int type: `f32`, `v16f32`, `i32`, `v16i32`.
pub(super) fn suffix(base: &str, lanes: u32) -> String {
    let b = match base {
        "float" => "f32",
        "half" => "f16",
        "double" => "f64",
        other => other,
    };
    if lanes == 0 {
        b.to_string()
    } else {
        format!("v{lanes}{b}")
    }
}

impl Fb {
    pub fn new() -> Fb {
        Fb { body: String::new(), allocas: String::new(), next: 0, cur: "entry".into() }
    }

    /// A fresh SSA name.
    pub fn fresh(&mut self) -> String {
        self.next += 1;
        format!("%v{}", self.next)
    }

    /// A fresh label name (without `%`).
    pub fn label(&mut self) -> String {
        self.next += 1;
        format!("L{}", self.next)
    }

    /// `%vN = rhs`, returning `%vN`.
    pub fn val(&mut self, rhs: impl AsRef<str>) -> String {
        let v = self.fresh();
        let _ = writeln!(self.body, "  {v} = {}", rhs.as_ref());
        v
    }

    /// An instruction without a result.
    pub fn inst(&mut self, s: impl AsRef<str>) {
        let _ = writeln!(self.body, "  {}", s.as_ref());
    }

    /// Start block `l` (the previous block must have ended in a terminator).
    pub fn block(&mut self, l: &str) {
        let _ = writeln!(self.body, "{l}:");
        self.cur = l.to_string();
    }

    pub fn br(&mut self, l: &str) {
        self.inst(format!("br label %{l}"));
    }

    pub fn condbr(&mut self, c: &str, t: &str, f: &str) {
        self.inst(format!("br i1 {c}, label %{t}, label %{f}"));
    }

    /// A stack slot in the entry block (promoted to registers by `mem2reg`).
    pub fn alloca(&mut self, ty: &str) -> String {
        let v = self.fresh();
        let _ = writeln!(self.allocas, "  {v} = alloca {ty}, align 64");
        v
    }

    /// A stack slot in the entry block holding `init` (of type `ty`) when the function starts.
    pub fn alloca_init(&mut self, ty: &str, init: &str) -> String {
        let v = self.alloca(ty);
        let _ = writeln!(self.allocas, "  store {ty} {init}, ptr {v}, align 64");
        v
    }

    /// Splat a scalar SSA value to `lanes` lanes.
    pub fn splat(&mut self, base: &str, lanes: u32, x: &str) -> String {
        if lanes == 0 {
            return x.to_string();
        }
        let one = self.val(format!("insertelement <1 x {base}> poison, {base} {x}, i64 0"));
        self.val(format!("shufflevector <1 x {base}> {one}, <1 x {base}> poison, <{lanes} x i32> zeroinitializer"))
    }

    /// The function text: `entry:` with the allocas, then the body.
    pub fn finish(self) -> String {
        format!("entry:\n{}{}", self.allocas, self.body)
    }
}
