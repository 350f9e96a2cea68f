//! opc's benchmark rows (issue 3). `rows.rs` is the single definition: the criterion benches in
//! `benches/rows.rs` use it through this crate and `opc bench` includes the same file.

pub mod rows;
