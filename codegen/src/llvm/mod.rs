//! stub
use crate::{Executable, Result, Target};
use opc_ir::Kernel;
use std::sync::Arc;
pub struct LlvmTarget;
impl Target for LlvmTarget {
    fn name(&self) -> &'static str { "llvm" }
    fn compile(&self, _k: &Kernel) -> Result<Arc<dyn Executable>> { let _ = inkwell::targets::TargetMachine::get_host_cpu_name(); todo!() }
}
