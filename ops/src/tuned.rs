//! Tuned configurations in the operator library: when the tuning database (`opc tune`,
//! `opc_tune::db`) holds records for a kernel of this library, on this machine, compiled with
//! the same source, dtypes and consts, a launch whose dims were tuned runs the fastest
//! correct configuration of that tuning run instead of the driver's heuristic tiles. Other
//! dims keep the heuristic. The tuned instance compiles on first use through the same path
//! as every operator kernel (DSL → passes → target), and is profiled under its own label.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use opc_codegen::{Executable, Target};
use opc_dsl::Instance;
use opc_ir::{Arg, ArgRef, Kernel};
use opc_tune::{Config, Key, KeyBase};

use crate::kernel_profile::KernelProfile;

/// The tuned configurations an [`crate::Ops`] can use: its target's machine and the best
/// configuration of every key of the database made on that machine.
pub(crate) struct Tunings {
    pub machine: String,
    pub best: Vec<(Key, Config)>,
}

impl Tunings {
    /// From `db` (none when there is no database or it cannot be read).
    pub fn load(db: Option<&opc_tune::Db>, target: &dyn Target) -> Tunings {
        let Some(db) = db else {
            return Tunings { machine: String::new(), best: vec![] };
        };
        let machine = target.machine();
        let records = db.load().unwrap_or_default();
        let best = opc_tune::db::best_per_key(&records)
            .into_iter()
            .filter(|(k, _)| k.machine == machine)
            .map(|(k, r)| (k.clone(), r.tunables.clone()))
            .collect();
        Tunings { machine, best }
    }
}

/// How an [`crate::Ops`] compiles one instance of a library kernel (shared with the tuned
/// wrapper, which compiles its configurations on demand).
#[derive(Clone)]
pub(crate) struct Compiler {
    pub target: Arc<dyn Target>,
    pub profile: Option<Arc<KernelProfile>>,
}

impl Compiler {
    pub fn compile(&self, file: &str, source: &str, kernel: &str, inst: &Instance) -> crate::Result<Arc<dyn Executable>> {
        let _timed = crate::CompileTimer::start();
        let path = format!("ops/kernels/{file}.opc");
        let mut k = opc_dsl::compile(&path, source, kernel, inst).map_err(|d| crate::OpError::Compile(d.to_string()))?;
        opc_passes::run_pipeline(&mut k, &Default::default()).map_err(|e| crate::OpError::Compile(e.to_string()))?;
        let mut exe = self.target.compile(&k)?;
        if let Some(profile) = &self.profile {
            let label = format!("{file}::{kernel}{}", crate::instance_label(inst));
            exe = Arc::new(crate::kernel_profile::Timed { inner: exe, label, profile: profile.clone() });
        }
        Ok(exe)
    }
}

/// A library kernel with tuned configurations for some dims.
pub(crate) struct Tuned {
    pub default: Arc<dyn Executable>,
    /// Tunables by the key's dims text (`KeyBase::dims`).
    pub by_dims: HashMap<String, Config>,
    pub compiler: Compiler,
    pub file: String,
    pub source: &'static str,
    pub kernel: String,
    pub inst: Instance,
    /// Compiled tuned configurations by dims text; `None`: it failed to compile, use the default.
    pub compiled: Mutex<HashMap<String, Option<Arc<dyn Executable>>>>,
}

impl Tuned {
    /// Wrap `default` if the database has tuned dims for it; else return it as is.
    pub fn wrap(
        default: Arc<dyn Executable>,
        tunings: &Tunings,
        compiler: &Compiler,
        (file, source, kernel, inst): (&str, &'static str, &str, &Instance),
    ) -> Arc<dyn Executable> {
        if tunings.best.is_empty() {
            return default;
        }
        let base = KeyBase::new(source, default.kernel(), &tunings.machine);
        let by_dims: HashMap<String, Config> = tunings.best.iter().filter(|(k, _)| base.matches(k)).map(|(k, c)| (k.dims.clone(), c.clone())).collect();
        if by_dims.is_empty() {
            return default;
        }
        Arc::new(Tuned {
            default,
            by_dims,
            compiler: compiler.clone(),
            file: file.into(),
            source,
            kernel: kernel.into(),
            inst: inst.clone(),
            compiled: Mutex::new(HashMap::new()),
        })
    }

    /// The executable for a launch with these arguments.
    fn pick<A: opc_ir::LaunchArg>(&self, args: &[A]) -> Arc<dyn Executable> {
        let Ok(syms) = opc_ir::launch::bind_dims(self.default.kernel(), args) else {
            return self.default.clone(); // the default launch reports the error
        };
        let dims = KeyBase::dims(self.default.kernel(), &syms);
        let Some(config) = self.by_dims.get(&dims) else {
            return self.default.clone();
        };
        let mut compiled = self.compiled.lock().unwrap_or_else(|e| e.into_inner());
        let exe = compiled.entry(dims).or_insert_with(|| {
            let inst = opc_tune::instance_of(&self.inst, config);
            self.compiler.compile(&self.file, self.source, &self.kernel, &inst).ok()
        });
        exe.clone().unwrap_or_else(|| self.default.clone())
    }
}

impl Executable for Tuned {
    fn launch(&self, args: &mut [Arg]) -> opc_codegen::Result<()> {
        self.pick(args).launch(args)
    }

    fn launch_refs(&self, args: &mut [ArgRef<'_>]) -> opc_codegen::Result<()> {
        self.pick(args).launch_refs(args)
    }

    fn kernel(&self) -> &Kernel {
        self.default.kernel()
    }
}
