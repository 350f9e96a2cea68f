//! Live rows of a fused K loop's `a` panel (`kloop.rs`), and of the packed `a` of a large
//! unfused `dot` with an accumulator (`dot.rs`): ragged row tiles skip their dead rows.
//!
//! A grouped GEMM (`moe_up` / `moe_down`) runs `BM`-row tiles over each expert's segment of the
//! permuted rows; rows past the segment load with index -1 and read as zeros, and so do the
//! rows past `M` of a plain GEMM's last row tile. After a chunk's panels are packed, the `a`
//! panel is scanned from its last row upwards for the last row with a nonzero value (usually
//! the first row scanned: dense tiles pay one row's scan). The micro-kernels then stop at that
//! row (`dot_blocks`' `live`), rounded up to whole register blocks.
//!
//! **Exactness.** A zero row of `a` adds `0·b[k, j]` to its accumulator row: exactly nothing
//! when every `b` value of the chunk is finite (a zero product, added to the accumulator,
//! changes at most the sign of a zero sum), but NaN when some `b` is infinite or NaN. So when
//! rows would be skipped, the `b` panel is checked for non-finite values first (exponent bits
//! all ones), and the whole tile runs if it has any: dead rows then hold the NaNs the
//! interpreter computes.

use opc_ir::DType;

use super::lower::Lower;

/// Lanes of one scan vector.
const W: usize = 16;

impl Lower<'_> {
    /// The live rows of the `rows × words` panel at `off` (32-bit words, row-major; bf16 pairs
    /// or f32 values per `dt`): one more than the last row with a nonzero value (an i64
    /// operand, 0 when all rows are zero). `words` is a multiple of 16.
    pub(super) fn live_rows(&mut self, off: u32, rows: usize, words: usize, dt: DType) -> String {
        debug_assert!(words.is_multiple_of(W));
        // Magnitude bits: ±0 is zero.
        let mag = if dt == DType::F32 { "2147483647" } else { "2147450879" }; // 0x7fffffff, 0x7fff7fff
        let pre = self.f.cur.clone();
        let header = self.f.label();
        let body = self.f.label();
        let exit = self.f.label();
        let i = self.f.fresh();
        let im1 = self.f.fresh();
        self.f.br(&header);
        self.f.block(&header);
        self.f.inst(format!("{i} = phi i64 [ {rows}, %{pre} ], [ {im1}, %{body} ]"));
        let done = self.f.val(format!("icmp eq i64 {i}, 0"));
        self.f.condbr(&done, &exit, &body);
        self.f.block(&body);
        self.f.inst(format!("{im1} = sub i64 {i}, 1"));
        let row = self.f.val(format!("mul i64 {im1}, {words}"));
        let mut acc = "zeroinitializer".to_string();
        for c in 0..words / W {
            let e = self.f.val(format!("add i64 {row}, {}", c * W));
            let x = self.load_arena("i32", 16, off, &e);
            acc = self.f.val(format!("or <16 x i32> {acc}, {x}"));
        }
        let m = self.f.val(format!("and <16 x i32> {acc}, splat (i32 {mag})"));
        let r = self.f.val(format!("call i32 @llvm.vector.reduce.or.v16i32(<16 x i32> {m})"));
        let nz = self.f.val(format!("icmp ne i32 {r}, 0"));
        self.f.condbr(&nz, &exit, &header);
        self.f.block(&exit);
        self.f.val(format!("phi i64 [ 0, %{header} ], [ {i}, %{body} ]"))
    }

    /// Whether the `words` 32-bit words at `off` hold a non-finite value (bf16 pairs or f32
    /// values per `dt`): an i1 operand. `words` is a multiple of 16.
    fn any_nonfinite(&mut self, off: u32, words: usize, dt: DType) -> crate::Result<String> {
        debug_assert!(words.is_multiple_of(W));
        let slot = self.f.alloca("<16 x i1>");
        self.f.inst(format!("store <16 x i1> zeroinitializer, ptr {slot}, align 2"));
        let exps: &[&str] = if dt == DType::F32 { &["2139095040"] } else { &["32640", "2139095040"] }; // 0x7f800000, 0x7f80
        self.loop_n(words / W, &mut |l, c| {
            let e = l.f.val(format!("mul i64 {c}, {W}"));
            let x = l.load_arena("i32", 16, off, &e);
            let mut bad = l.f.val(format!("load <16 x i1>, ptr {slot}, align 2"));
            for ex in exps {
                let t = l.f.val(format!("and <16 x i32> {x}, splat (i32 {ex})"));
                let b = l.f.val(format!("icmp eq <16 x i32> {t}, splat (i32 {ex})"));
                bad = l.f.val(format!("or <16 x i1> {bad}, {b}"));
            }
            l.f.inst(format!("store <16 x i1> {bad}, ptr {slot}, align 2"));
            Ok(())
        })?;
        let bad = self.f.val(format!("load <16 x i1>, ptr {slot}, align 2"));
        Ok(self.f.val(format!("call i1 @llvm.vector.reduce.or.v16i1(<16 x i1> {bad})")))
    }

    /// The rows a micro-kernel sweep must cover: `live` (from [`Self::live_rows`]) when the
    /// `b` panel (`words` words at `b`) is all finite, else all `rows`. The `b` scan runs only
    /// when rows would be skipped.
    pub(super) fn rows_to_run(&mut self, live: &str, rows: usize, b: u32, words: usize, dt: DType) -> crate::Result<String> {
        let pre = self.f.cur.clone();
        let scan = self.f.label();
        let join = self.f.label();
        let short = self.f.val(format!("icmp ult i64 {live}, {rows}"));
        self.f.condbr(&short, &scan, &join);
        self.f.block(&scan);
        let bad = self.any_nonfinite(b, words, dt)?;
        let scan_end = self.f.cur.clone();
        self.f.br(&join);
        self.f.block(&join);
        let bad = self.f.val(format!("phi i1 [ false, %{pre} ], [ {bad}, %{scan_end} ]"));
        Ok(self.f.val(format!("select i1 {bad}, i64 {rows}, i64 {live}")))
    }
}
