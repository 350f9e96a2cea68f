//! Read-only facts about a kernel that several passes share.
pub mod effects;

pub use effects::{has_effects, is_pure, read_only_tensors};
