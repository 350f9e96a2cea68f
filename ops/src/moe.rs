//! moe operator drivers
