//! The PTX text builder: typed virtual registers, labels and instruction lines.
//!
//! PTX registers are virtual (ptxas allocates the hardware ones), so the lowering takes a fresh
//! register for every value it computes and declares them all at the top of the entry
//! (`.reg .f32 %f<N>;`). Registers are not SSA in PTX: a register written inside a loop body is
//! simply rewritten each iteration, and loop-carried values are registers that `yield` moves
//! into (see `lower.rs`).

use std::fmt::{self, Write};

/// The register classes the lowering uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    /// `.pred`
    P,
    /// `.b16` (f16 / bf16 bits)
    H,
    /// `.b32` (ints, bool, codes, addresses in shared memory)
    R,
    /// `.f32` (f32 / f16 / bf16 values)
    F,
    /// `.b64` (global addresses, dims, offsets)
    D,
    /// `.f64` (exact intermediate of a few casts and of `fmod`)
    Fd,
}

const KINDS: [(Kind, &str, &str); 6] =
    [(Kind::P, "pred", "p"), (Kind::H, "b16", "h"), (Kind::R, "b32", "r"), (Kind::F, "f32", "f"), (Kind::D, "b64", "rd"), (Kind::Fd, "f64", "fd")];

fn kind_index(k: Kind) -> usize {
    KINDS.iter().position(|(x, _, _)| *x == k).expect("every kind is listed")
}

/// A virtual register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Reg {
    pub kind: Kind,
    pub n: u32,
}

impl fmt::Display for Reg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "%{}{}", KINDS[kind_index(self.kind)].2, self.n)
    }
}

/// An f32 immediate in PTX's exact hex form (`0f3F800000`).
pub(super) fn fimm(x: f32) -> String {
    format!("0f{:08X}", x.to_bits())
}

/// An f64 immediate (`0d3FF0000000000000`).
pub(super) fn dimm(x: f64) -> String {
    format!("0d{:016X}", x.to_bits())
}

/// One entry's body under construction.
#[derive(Default)]
pub(super) struct Ptx {
    body: String,
    counts: [u32; 6],
    labels: u32,
}

impl Ptx {
    pub fn reg(&mut self, kind: Kind) -> Reg {
        let i = kind_index(kind);
        self.counts[i] += 1;
        Reg { kind, n: self.counts[i] - 1 }
    }

    /// One instruction (without the trailing `;`).
    pub fn ins(&mut self, s: impl AsRef<str>) {
        self.body.push('\t');
        self.body.push_str(s.as_ref());
        self.body.push_str(";\n");
    }

    /// A comment line (kept in the output: it names the IR op each block of code comes from).
    pub fn comment(&mut self, s: impl AsRef<str>) {
        let _ = writeln!(self.body, "\t// {}", s.as_ref());
    }

    pub fn label(&mut self) -> String {
        self.labels += 1;
        format!("$L{}", self.labels)
    }

    pub fn place(&mut self, l: &str) {
        let _ = writeln!(self.body, "{l}:");
    }

    /// `mov` of an immediate or register into a fresh register of `kind`.
    pub fn mov(&mut self, kind: Kind, src: impl fmt::Display) -> Reg {
        let r = self.reg(kind);
        let ty = match kind {
            Kind::P => "pred",
            Kind::H => "b16",
            Kind::R => "b32",
            Kind::F => "f32",
            Kind::D => "b64",
            Kind::Fd => "f64",
        };
        self.ins(format!("mov.{ty} {r}, {src}"));
        r
    }

    /// `op.ty d, a, b...` into a fresh register.
    pub fn op(&mut self, kind: Kind, opcode: &str, srcs: &[&dyn fmt::Display]) -> Reg {
        let r = self.reg(kind);
        let mut s = format!("{opcode} {r}");
        for x in srcs {
            let _ = write!(s, ", {x}");
        }
        self.ins(s);
        r
    }

    /// The register declarations followed by the body.
    pub fn finish(self) -> String {
        let mut out = String::new();
        for (i, (_, ty, pfx)) in KINDS.iter().enumerate() {
            if self.counts[i] > 0 {
                let _ = writeln!(out, "\t.reg .{ty} %{pfx}<{}>;", self.counts[i]);
            }
        }
        out.push_str(&self.body);
        out
    }
}
