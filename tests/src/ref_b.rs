//! Naive references: moe, kl_judge, building blocks
