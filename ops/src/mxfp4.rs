//! mxfp4 operator drivers
