//! Naive references: attention, kron_quant, mxfp4
