//! kl_judge operator drivers
