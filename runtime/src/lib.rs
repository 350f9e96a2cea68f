//! opc runtime: reference fixtures (safetensors) and operator verification against them.

pub mod fixtures;
pub mod model;
pub mod verify;

pub use fixtures::{FixtureFile, RuntimeError};
pub use verify::{verify_fixtures, verify_fixtures_filtered, Summary, VerifyError};
