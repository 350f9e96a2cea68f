//! blocks operator drivers
