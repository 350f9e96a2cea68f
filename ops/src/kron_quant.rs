//! kron_quant operator drivers
