//! opc runtime
