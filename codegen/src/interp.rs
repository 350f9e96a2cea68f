//! The interpreter as a target: "compiling" keeps the IR, launching interprets it.
//! Every other target is checked against this one.

use crate::{Executable, Result, Target};
use opc_ir::{Arg, Kernel};
use std::sync::Arc;

pub struct InterpTarget;

struct InterpExecutable {
    kernel: Kernel,
}

impl Target for InterpTarget {
    fn name(&self) -> &'static str {
        "interp"
    }
    fn compile(&self, kernel: &Kernel) -> Result<Arc<dyn Executable>> {
        Ok(Arc::new(InterpExecutable { kernel: kernel.clone() }))
    }
}

impl Executable for InterpExecutable {
    fn launch(&self, args: &mut [Arg]) -> Result<()> {
        opc_ir::interp::run(&self.kernel, args)?;
        Ok(())
    }
    fn kernel(&self) -> &Kernel {
        &self.kernel
    }
}
