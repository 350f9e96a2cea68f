//! opc's benchmark rows (issue 3). `rows.rs` is the single definition: the criterion benches in
//! `benches/rows.rs` use it through this crate and `opc bench` includes the same file.

pub mod rows;

#[cfg(test)]
mod tests {
    #[test]
    fn row_names_are_unique_and_work_is_positive() {
        let rows = super::rows::rows();
        let mut names: Vec<_> = rows.iter().map(|r| r.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), rows.len());
        for r in &rows {
            let w = match r.work {
                super::rows::Work::Flops(x) | super::rows::Work::Bytes(x) => x,
            };
            assert!(w > 1e6, "{}", r.name);
        }
    }
}
