//! The AscendC-level program ("lir") that the lowering builds, the static checks read and the
//! emitter prints.
//!
//! It is deliberately thin: C++ text for scalar code, plus one [`Instr`] per AscendC API call
//! that touches on-chip memory or synchronizes, annotated with the hardware pipe that executes
//! it, the buffers it reads and writes and its synchronization effect. That annotation is what
//! the checks in `check.rs` (queue balance, the pipe-synchronization rule, DataCopy granularity)
//! reason about, so the C++ text of an instruction is never re-parsed.
//!
//! Buffers ([`Buf`]) are the planned regions of the on-chip arenas: `calc` tiles in UB with a
//! live interval (offsets are chosen by `plan.rs`), and queue buffers (one per `TQue`).

use opc_ir::Loc;

/// A hardware pipe of the AI Core (what executes an instruction).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Pipe {
    /// Scalar unit: `GetValue` / `SetValue` on local tensors, scalar control.
    S,
    /// Vector unit (AIV): every vector instruction, UB to UB `DataCopy`.
    V,
    /// Cube unit (AIC): `Mmad`.
    M,
    /// L1 to L0A / L0B (`LoadData`).
    Mte1,
    /// GM to UB / L1.
    Mte2,
    /// UB to GM.
    Mte3,
    /// L0C to GM (`Fixpipe`).
    Fix,
}

impl Pipe {
    pub const ALL: [Pipe; 7] = [Pipe::S, Pipe::V, Pipe::M, Pipe::Mte1, Pipe::Mte2, Pipe::Mte3, Pipe::Fix];

    /// The `HardEvent` spelling of this pipe (`MTE2` in `HardEvent::MTE2_V`).
    pub fn event_name(self) -> &'static str {
        match self {
            Pipe::S => "S",
            Pipe::V => "V",
            Pipe::M => "M",
            Pipe::Mte1 => "MTE1",
            Pipe::Mte2 => "MTE2",
            Pipe::Mte3 => "MTE3",
            Pipe::Fix => "FIX",
        }
    }

    /// The `pipe_t` spelling (`PIPE_V`).
    pub fn pipe_name(self) -> &'static str {
        match self {
            Pipe::S => "PIPE_S",
            Pipe::V => "PIPE_V",
            Pipe::M => "PIPE_M",
            Pipe::Mte1 => "PIPE_MTE1",
            Pipe::Mte2 => "PIPE_MTE2",
            Pipe::Mte3 => "PIPE_MTE3",
            Pipe::Fix => "PIPE_FIX",
        }
    }

    pub fn index(self) -> usize {
        Pipe::ALL.iter().position(|p| *p == self).unwrap_or(0)
    }
}

/// On-chip memories with their capacities on the 910B (Atlas A2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Space {
    Ub,
    L1,
    L0a,
    L0b,
    L0c,
}

impl Space {
    pub fn name(self) -> &'static str {
        match self {
            Space::Ub => "UB",
            Space::L1 => "L1",
            Space::L0a => "L0A",
            Space::L0b => "L0B",
            Space::L0c => "L0C",
        }
    }

    /// Capacity in bytes (the arenas of the CPU model use the same numbers).
    pub fn capacity(self) -> u64 {
        match self {
            Space::Ub => 192 * 1024,
            Space::L1 => 512 * 1024,
            Space::L0a | Space::L0b => 64 * 1024,
            Space::L0c => 128 * 1024,
        }
    }
}

/// A `TPosition` of a queue or buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Pos {
    VecIn,
    VecOut,
    VecCalc,
    A1,
    B1,
    A2,
    B2,
    Co1,
}

impl Pos {
    pub fn cpp(self) -> &'static str {
        match self {
            Pos::VecIn => "TPosition::VECIN",
            Pos::VecOut => "TPosition::VECOUT",
            Pos::VecCalc => "TPosition::VECCALC",
            Pos::A1 => "TPosition::A1",
            Pos::B1 => "TPosition::B1",
            Pos::A2 => "TPosition::A2",
            Pos::B2 => "TPosition::B2",
            Pos::Co1 => "TPosition::CO1",
        }
    }

    pub fn space(self) -> Space {
        match self {
            Pos::VecIn | Pos::VecOut | Pos::VecCalc => Space::Ub,
            Pos::A1 | Pos::B1 => Space::L1,
            Pos::A2 => Space::L0a,
            Pos::B2 => Space::L0b,
            Pos::Co1 => Space::L0c,
        }
    }

    /// The pipes on either side of a queue at this position: who fills a buffer (`EnQue`) and
    /// who drains it (`DeQue`). `EnQue`/`DeQue` is the producer→consumer hand-off and
    /// `FreeTensor`/`AllocTensor` the consumer→producer one.
    pub fn queue_pipes(self) -> (Pipe, Pipe) {
        match self {
            Pos::VecIn => (Pipe::Mte2, Pipe::V),
            Pos::VecOut => (Pipe::V, Pipe::Mte3),
            Pos::VecCalc => (Pipe::V, Pipe::V),
            Pos::A1 | Pos::B1 => (Pipe::Mte2, Pipe::Mte1),
            Pos::A2 | Pos::B2 => (Pipe::Mte1, Pipe::M),
            Pos::Co1 => (Pipe::M, Pipe::Fix),
        }
    }
}

/// Index of a [`Buf`] in [`Kernel::bufs`].
pub type BufId = usize;
/// Index of a [`Queue`] in [`Kernel::queues`].
pub type QueueId = usize;

/// A tile of the `calc` arena (`TBuf<TPosition::VECCALC>`), live over `[live.0, live.1]`
/// (positions of the lowering; see `liveness.rs`). `off` is set by memory planning.
#[derive(Clone, Debug)]
pub struct Buf {
    /// C++ name of the `LocalTensor` (`b12`).
    pub name: String,
    /// C++ element type.
    pub elem: &'static str,
    /// Elements (already padded).
    pub elems: u64,
    pub bytes: u64,
    pub live: (u32, u32),
    /// What it holds, for messages and comments (`%87 f32[64, 64]`).
    pub what: String,
    pub loc: Option<Loc>,
    pub off: Option<u64>,
}

/// A `TQue<pos, depth>` with `num` buffers of `bytes` each.
#[derive(Clone, Debug)]
pub struct Queue {
    pub name: String,
    pub pos: Pos,
    pub depth: u32,
    pub num: u32,
    pub bytes: u64,
    /// Which side of a MIX kernel owns it.
    pub core: Core,
    pub what: String,
    /// DSL location of the tile that sized it (for budget errors).
    pub loc: Option<opc_ir::Loc>,
}

/// Which core type runs a piece of code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Core {
    Aiv,
    Aic,
}

/// A resource an instruction reads or writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Res {
    Buf(BufId),
    /// The tensor currently allocated from a queue.
    Queue(QueueId),
    /// Global memory (only cross-core flags order it; tracked for completeness).
    Gm,
}

/// How many bytes a `DataCopy` moves, as far as the compiler knows it.
#[derive(Clone, Debug, PartialEq)]
pub enum CopyLen {
    /// A static element count of `elem_bytes`-byte elements.
    Elems { count: u64, elem_bytes: u64 },
    /// A run-time count in 32-byte blocks (whole blocks by construction).
    Blocks(String),
    /// `DataCopyPad`: any byte length.
    Pad,
}

/// The synchronization effect of an instruction.
#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    None,
    AllocTensor(QueueId),
    EnQue(QueueId),
    DeQue(QueueId),
    FreeTensor(QueueId),
    /// `SetFlag<HardEvent::A_B>(id)`.
    SetFlag(Pipe, Pipe, u8),
    /// `WaitFlag<HardEvent::A_B>(id)`.
    WaitFlag(Pipe, Pipe, u8),
    /// `PipeBarrier<p>()`; `None` is `PIPE_ALL`.
    Barrier(Option<Pipe>),
    CrossCoreSet(u8),
    CrossCoreWait(u8),
    /// A data movement (`DataCopy`, `DataCopyPad`).
    Copy(CopyLen),
}

/// One AscendC API call (or a scalar loop over local tensors, on pipe S).
#[derive(Clone, Debug)]
pub struct Instr {
    /// C++ text, possibly several lines (no trailing newline).
    pub text: String,
    pub pipe: Pipe,
    pub reads: Vec<Res>,
    pub writes: Vec<Res>,
    pub effect: Effect,
    /// Source location of the tile-IR op it implements.
    pub loc: Option<Loc>,
}

#[derive(Clone, Debug)]
pub enum Stmt {
    /// Scalar C++ (declarations, index arithmetic); touches no local tensor.
    Line(String),
    Comment(String),
    Instr(Instr),
    /// `for (head) { body }`; `head` is the text between the parentheses.
    Loop {
        head: String,
        body: Vec<Stmt>,
    },
    If {
        cond: String,
        then_: Vec<Stmt>,
        else_: Vec<Stmt>,
    },
}

/// Everything the emitter needs about one lowered kernel.
#[derive(Clone, Debug, Default)]
pub struct Kernel {
    pub bufs: Vec<Buf>,
    pub queues: Vec<Queue>,
    /// The vector program (AIV, sub-block 0 in a MIX kernel).
    pub aiv: Vec<Stmt>,
    /// The cube program (AIC) of a MIX kernel.
    pub aic: Option<Vec<Stmt>>,
    /// The control skeleton the second AIV of a group runs in a MIX kernel: the same scalar
    /// control flow, taking part in every cross-core hand-off.
    pub aiv_peer: Option<Vec<Stmt>>,
    /// Rows per sub-block when both AIVs of a group run the vector program on half the rows of
    /// every level-1 block (`GetSubBlockIdx()` picks the half; see `split.rs`).
    pub split_rows: Option<u64>,
    /// Cube sites computed one loop step ahead into ping-pong GM slots (`lower/pipeline.rs`).
    pub pipelined_sites: usize,
    /// Bytes of GM workspace one group (or one AIV core) needs.
    pub workspace_per_core: u64,
    /// Number of cube↔vector hand-offs (dot sites), for the manifest.
    pub cube_sites: usize,
    /// The vector program's precomputed tiles are filled once per kernel (guarded by the
    /// `prologueDone_` member) instead of once per level-1 program.
    pub once_prologue: bool,
    /// Tiling-mask caches (`lower/tilemask.rs`): (slots, keys) of each `OpcMaskTags` member.
    pub mask_tags: Vec<(usize, usize)>,
}

impl Kernel {
    /// Bytes of UB used by queue buffers (outside the calc arena).
    pub fn queue_bytes(&self, space: Space) -> u64 {
        self.queues.iter().filter(|q| q.pos.space() == space).map(|q| q.bytes * q.num as u64).sum()
    }
}

/// Round `x` up to a multiple of `m`.
pub fn round_up(x: u64, m: u64) -> u64 {
    x.div_ceil(m) * m
}
