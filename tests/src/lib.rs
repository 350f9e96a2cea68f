//! Shared helpers of opc's end-to-end tests: naive Rust references (independent of the DSL),
//! random tensor builders and comparison helpers.

pub mod ref_a;
pub mod ref_b;
