//! Transcendental functions in PTX.
//!
//! The interpreter uses Rust's `f32` functions (libm, within 1 ulp). PTX's `.approx`
//! instructions alone are not that accurate (`lg2.approx` has an *absolute* error bound, so `log`
//! near 1 loses all relative precision; `sin.approx` is only accurate on [-π, π]), so:
//! - `exp2` is `ex2.approx.f32` (relative error ≤ 2⁻²², about 2 ulp; subnormal results kept);
//! - `exp(x)` is `ex2.approx(t)·(1 + c·ln 2)` with `t = x·log2 e` and `c` its rounding error
//!   recovered by an FMA: about 2 ulp over the whole range;
//! - `log` / `log2` reduce to a mantissa in [√½, √2) and evaluate `2·atanh((m−1)/(m+1))` as an odd
//!   series: about 1–2 ulp, exact at 1, with the IEEE special cases;
//! - `sin` / `cos` reduce by π/2 in three FMA steps (Cody–Waite) and evaluate the cephes `sinf` /
//!   `cosf` polynomials: about 1–2 ulp for |x| < 10⁵, degrading slowly beyond;
//! - `tanh` is the cephes polynomial below 0.625 and `1 − 2/(e^{2|x|} + 1)` above;
//! - `pow(x, y)` is `exp2(y·log2|x|)` with IEEE sign and special cases: the product's rounding
//!   is amplified by |y·log2 x|, a few ulp for typical results;
//! - float `%` (fmod) is exact: repeated exact subtraction of `|y|·2ᵏ` in f64.
//!
//! So f32 results of these functions may differ from the interpreter by a few ulp (f16/bf16
//! results, rounded afterwards, almost never do); every other op is bit-exact.

use super::emit::{dimm, fimm, Kind, Reg};
use super::lower::Lower;

const L2E: f32 = std::f32::consts::LOG2_E;
const LN2: f32 = std::f32::consts::LN_2;

impl Lower<'_> {
    fn fop(&mut self, opc: &str, a: &dyn std::fmt::Display, b: &dyn std::fmt::Display) -> Reg {
        self.p.op(Kind::F, opc, &[a, b])
    }

    fn fma(&mut self, a: &dyn std::fmt::Display, b: &dyn std::fmt::Display, c: &dyn std::fmt::Display) -> Reg {
        self.p.op(Kind::F, "fma.rn.f32", &[a, b, c])
    }

    pub(super) fn exp(&mut self, x: Reg) -> Reg {
        let t = self.fop("mul.rn.f32", &x, &fimm(L2E));
        let nt = self.p.op(Kind::F, "neg.f32", &[&t]);
        let c = self.fma(&x, &fimm(L2E), &nt);
        let y = self.p.op(Kind::F, "ex2.approx.f32", &[&t]);
        let cl = self.fop("mul.rn.f32", &c, &fimm(LN2));
        let r = self.fma(&y, &cl, &y);
        // t = ±inf (or NaN): the correction is NaN; ex2 alone is right
        let inf = self.p.op(Kind::P, "testp.infinite.f32", &[&t]);
        self.p.op(Kind::F, "selp.f32", &[&y, &r, &inf])
    }

    /// `ln x` (or `log2 x` when `base2`).
    pub(super) fn log(&mut self, x: Reg, base2: bool) -> Reg {
        let sub = self.p.op(Kind::P, "setp.lt.f32", &[&x, &fimm(f32::MIN_POSITIVE)]);
        let scaled = self.fop("mul.rn.f32", &x, &fimm(8_388_608.0));
        let xs = self.p.op(Kind::F, "selp.f32", &[&scaled, &x, &sub]);
        let adj = self.p.op(Kind::R, "selp.b32", &[&-23, &0, &sub]);
        let bits = self.p.op(Kind::R, "mov.b32", &[&xs]);
        let e = self.p.op(Kind::R, "bfe.u32", &[&bits, &23, &8]);
        let e = self.p.op(Kind::R, "add.s32", &[&e, &adj]);
        let e = self.p.op(Kind::R, "sub.s32", &[&e, &127]);
        let mb = self.p.op(Kind::R, "and.b32", &[&bits, &0x7F_FFFF]);
        let mb = self.p.op(Kind::R, "or.b32", &[&mb, &0x3F80_0000]);
        // m > √2: halve it and bump the exponent
        let big = self.p.op(Kind::P, "setp.gt.u32", &[&mb, &0x3FB5_04F3]);
        let half = self.p.op(Kind::R, "sub.u32", &[&mb, &0x0080_0000]);
        let mb = self.p.op(Kind::R, "selp.b32", &[&half, &mb, &big]);
        let inc = self.p.op(Kind::R, "selp.b32", &[&1, &0, &big]);
        let e = self.p.op(Kind::R, "add.s32", &[&e, &inc]);
        let m = self.p.op(Kind::F, "mov.b32", &[&mb]);
        let num = self.fop("sub.rn.f32", &m, &fimm(1.0));
        let den = self.fop("add.rn.f32", &m, &fimm(1.0));
        let u = self.fop("div.rn.f32", &num, &den);
        let s = self.fop("mul.rn.f32", &u, &u);
        let mut p = self.p.mov(Kind::F, fimm(1.0 / 11.0));
        for c in [1.0 / 9.0, 1.0 / 7.0, 1.0 / 5.0, 1.0 / 3.0f32] {
            p = self.fma(&p, &s, &fimm(c));
        }
        let u2 = self.fop("add.rn.f32", &u, &u);
        let u2s = self.fop("mul.rn.f32", &u2, &s);
        let lm = self.fma(&u2s, &p, &u2);
        let ef = self.p.op(Kind::F, "cvt.rn.f32.s32", &[&e]);
        let r = if base2 {
            let l2 = self.fop("mul.rn.f32", &lm, &fimm(L2E));
            self.fop("add.rn.f32", &ef, &l2)
        } else {
            self.fma(&ef, &fimm(LN2), &lm)
        };
        // special cases: +inf → +inf, ±0 → -inf, x < 0 or NaN → NaN
        let inf = self.p.op(Kind::P, "setp.eq.f32", &[&x, &fimm(f32::INFINITY)]);
        let r = self.p.op(Kind::F, "selp.f32", &[&fimm(f32::INFINITY), &r, &inf]);
        let zero = self.p.op(Kind::P, "setp.eq.f32", &[&x, &fimm(0.0)]);
        let r = self.p.op(Kind::F, "selp.f32", &[&fimm(f32::NEG_INFINITY), &r, &zero]);
        let bad = self.p.op(Kind::P, "setp.ltu.f32", &[&x, &fimm(0.0)]);
        self.p.op(Kind::F, "selp.f32", &[&fimm(f32::NAN), &r, &bad])
    }

    /// `sin x`, or `cos x` (= sin of the next quadrant).
    pub(super) fn sincos(&mut self, x: Reg, cos: bool) -> Reg {
        let t = self.fop("mul.rn.f32", &x, &fimm(std::f32::consts::FRAC_2_PI));
        let j = self.p.op(Kind::F, "cvt.rni.f32.f32", &[&t]);
        let mut r = x;
        for c in [1.5703125f32, 4.837_513e-4, 7.549_79e-8] {
            r = self.fma(&j, &fimm(-c), &r);
        }
        let q = self.p.op(Kind::R, "cvt.rzi.s32.f32", &[&j]);
        let q = if cos { self.p.op(Kind::R, "add.s32", &[&q, &1]) } else { q };
        let s = self.fop("mul.rn.f32", &r, &r);
        // sin(r) = r + r·s·P(s), cos(r) = 1 − s/2 + s²·Q(s)
        let ps = self.fma(&fimm(-1.951_529_6e-4), &s, &fimm(8.332_161e-3));
        let ps = self.fma(&ps, &s, &fimm(-1.666_665_5e-1));
        let rs = self.fop("mul.rn.f32", &r, &s);
        let sinp = self.fma(&rs, &ps, &r);
        let pc = self.fma(&fimm(2.443_315_7e-5), &s, &fimm(-1.388_731_6e-3));
        let pc = self.fma(&pc, &s, &fimm(4.166_664_6e-2));
        let ss = self.fop("mul.rn.f32", &s, &s);
        let hs = self.fma(&s, &fimm(-0.5), &fimm(1.0));
        let cosp = self.fma(&ss, &pc, &hs);
        let odd = self.p.op(Kind::R, "and.b32", &[&q, &1]);
        let oddp = self.p.op(Kind::P, "setp.ne.b32", &[&odd, &0]);
        let v = self.p.op(Kind::F, "selp.f32", &[&cosp, &sinp, &oddp]);
        let neg = self.p.op(Kind::R, "and.b32", &[&q, &2]);
        let negp = self.p.op(Kind::P, "setp.ne.b32", &[&neg, &0]);
        let nv = self.p.op(Kind::F, "neg.f32", &[&v]);
        self.p.op(Kind::F, "selp.f32", &[&nv, &v, &negp])
    }

    #[allow(clippy::excessive_precision)] // cephes `tanhf` coefficients as published
    pub(super) fn tanh(&mut self, x: Reg) -> Reg {
        let a = self.p.op(Kind::F, "abs.f32", &[&x]);
        let z = self.fop("mul.rn.f32", &x, &x);
        let mut p = self.p.mov(Kind::F, fimm(-5.704_988_7e-3));
        for c in [2.063_908_9e-2, -5.373_971_6e-2, 1.333_144_2e-1, -3.333_328_2e-1f32] {
            p = self.fma(&p, &z, &fimm(c));
        }
        let xz = self.fop("mul.rn.f32", &x, &z);
        let small = self.fma(&xz, &p, &x);
        let a2 = self.fop("add.rn.f32", &a, &a);
        let e = self.exp(a2);
        let d = self.fop("add.rn.f32", &e, &fimm(1.0));
        let q = self.fop("div.rn.f32", &fimm(2.0), &d);
        let big = self.fop("sub.rn.f32", &fimm(1.0), &q);
        let big = self.p.op(Kind::F, "copysign.f32", &[&x, &big]);
        let is_small = self.p.op(Kind::P, "setp.lt.f32", &[&a, &fimm(0.625)]);
        self.p.op(Kind::F, "selp.f32", &[&small, &big, &is_small])
    }

    pub(super) fn powf(&mut self, x: Reg, y: Reg) -> Reg {
        let ax = self.p.op(Kind::F, "abs.f32", &[&x]);
        let l = self.log(ax, true);
        let t = self.fop("mul.rn.f32", &y, &l);
        let r = self.p.op(Kind::F, "ex2.approx.f32", &[&t]);
        // y an integer? odd?
        let yt = self.p.op(Kind::F, "cvt.rzi.f32.f32", &[&y]);
        let yint = self.p.op(Kind::P, "setp.eq.f32", &[&yt, &y]);
        let ay = self.p.op(Kind::F, "abs.f32", &[&y]);
        let small = self.p.op(Kind::P, "setp.lt.f32", &[&ay, &fimm(16_777_216.0)]);
        let yi = self.p.op(Kind::R, "cvt.rzi.s32.f32", &[&y]);
        let bit = self.p.op(Kind::R, "and.b32", &[&yi, &1]);
        let oddb = self.p.op(Kind::P, "setp.ne.b32", &[&bit, &0]);
        let odd = self.p.op(Kind::P, "and.pred", &[&oddb, &small]);
        let odd = self.p.op(Kind::P, "and.pred", &[&odd, &yint]);
        let xb = self.p.op(Kind::R, "mov.b32", &[&x]);
        let sign = self.p.op(Kind::P, "setp.lt.s32", &[&xb, &0]);
        let flip = self.p.op(Kind::P, "and.pred", &[&sign, &odd]);
        let nr = self.p.op(Kind::F, "neg.f32", &[&r]);
        let r = self.p.op(Kind::F, "selp.f32", &[&nr, &r, &flip]);
        let xneg = self.p.op(Kind::P, "setp.lt.f32", &[&x, &fimm(0.0)]);
        let nonint = self.p.op(Kind::P, "not.pred", &[&yint]);
        let nan = self.p.op(Kind::P, "and.pred", &[&xneg, &nonint]);
        let r = self.p.op(Kind::F, "selp.f32", &[&fimm(f32::NAN), &r, &nan]);
        // |x| = 1 with y = ±inf, x = 1, y = 0: exactly 1
        let one = self.p.op(Kind::P, "setp.eq.f32", &[&ax, &fimm(1.0)]);
        let yinf = self.p.op(Kind::P, "testp.infinite.f32", &[&y]);
        let a = self.p.op(Kind::P, "and.pred", &[&one, &yinf]);
        let x1 = self.p.op(Kind::P, "setp.eq.f32", &[&x, &fimm(1.0)]);
        let y0 = self.p.op(Kind::P, "setp.eq.f32", &[&y, &fimm(0.0)]);
        let a = self.p.op(Kind::P, "or.pred", &[&a, &x1]);
        let a = self.p.op(Kind::P, "or.pred", &[&a, &y0]);
        self.p.op(Kind::F, "selp.f32", &[&fimm(1.0), &r, &a])
    }

    /// Exact `x % y` (Rust's f32 `%`).
    pub(super) fn fmod(&mut self, x: Reg, y: Reg) -> Reg {
        let ax = self.p.op(Kind::F, "abs.f32", &[&x]);
        let ay = self.p.op(Kind::F, "abs.f32", &[&y]);
        let r = self.p.op(Kind::Fd, "cvt.f64.f32", &[&ax]);
        let b0 = self.p.op(Kind::Fd, "cvt.f64.f32", &[&ay]);
        let b0bits = self.p.op(Kind::D, "mov.b64", &[&b0]);
        let ey = self.p.op(Kind::D, "shr.u64", &[&b0bits, &52]);
        let nan_y = self.p.op(Kind::P, "testp.notanumber.f32", &[&y]);
        let y0 = self.p.op(Kind::P, "setp.eq.f32", &[&y, &fimm(0.0)]);
        let xinf = self.p.op(Kind::P, "testp.infinite.f32", &[&x]);
        let nan_x = self.p.op(Kind::P, "testp.notanumber.f32", &[&x]);
        let bad = self.p.op(Kind::P, "or.pred", &[&nan_y, &y0]);
        let bad = self.p.op(Kind::P, "or.pred", &[&bad, &xinf]);
        let bad = self.p.op(Kind::P, "or.pred", &[&bad, &nan_x]);
        let (top, done) = (self.p.label(), self.p.label());
        self.p.ins(format!("@{bad} bra {done}"));
        self.p.place(&top);
        let lt = self.p.op(Kind::P, "setp.ltu.f64", &[&r, &b0]);
        self.p.ins(format!("@{lt} bra {done}"));
        let rbits = self.p.op(Kind::D, "mov.b64", &[&r]);
        let er = self.p.op(Kind::D, "shr.u64", &[&rbits, &52]);
        let k = self.p.op(Kind::D, "sub.s64", &[&er, &ey]);
        let k = self.p.op(Kind::D, "shl.b64", &[&k, &52]);
        let bb = self.p.op(Kind::D, "add.s64", &[&b0bits, &k]);
        let b = self.p.op(Kind::Fd, "mov.b64", &[&bb]);
        let over = self.p.op(Kind::P, "setp.gt.f64", &[&b, &r]);
        let hb = self.p.op(Kind::Fd, "mul.rn.f64", &[&b, &dimm(0.5)]);
        let b = self.p.op(Kind::Fd, "selp.f64", &[&hb, &b, &over]);
        self.p.ins(format!("sub.rn.f64 {r}, {r}, {b}"));
        self.p.ins(format!("bra {top}"));
        self.p.place(&done);
        let res = self.p.op(Kind::F, "cvt.rn.f32.f64", &[&r]);
        let res = self.p.op(Kind::F, "copysign.f32", &[&x, &res]);
        self.p.op(Kind::F, "selp.f32", &[&fimm(f32::NAN), &res, &bad])
    }
}
