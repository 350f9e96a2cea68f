//! attention operator drivers
