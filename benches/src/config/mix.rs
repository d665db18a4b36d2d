//! The operation mix of a run: the YCSB core [`Workload`] presets and the
//! [`Mix`] of operation shares they (or `--read-ratio`) set.

use std::fmt;

use clap::ValueEnum;
use serde::Serialize;

use crate::report::Op;

/// YCSB core workloads (see the [`config`](super) module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Workload {
    /// Update heavy: 50% reads, 50% updates.
    A,
    /// Read mostly: 95% reads, 5% updates.
    B,
    /// Read only.
    C,
    /// Read-modify-write: 50% reads, 50% get-then-put with context.
    F,
    /// Load phase: every key inserted once, in order.
    Load,
}

impl Workload {
    pub(super) fn mix(self) -> Mix {
        match self {
            Workload::A => Mix::reads(0.5),
            Workload::B => Mix::reads(0.95),
            Workload::C => Mix::reads(1.0),
            Workload::F => Mix {
                read: 0.5,
                update: 0.0,
                read_modify_write: 0.5,
                insert: 0.0,
            },
            Workload::Load => Mix {
                read: 0.0,
                update: 0.0,
                read_modify_write: 0.0,
                insert: 1.0,
            },
        }
    }
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Workload::A => "a",
            Workload::B => "b",
            Workload::C => "c",
            Workload::F => "f",
            Workload::Load => "load",
        })
    }
}

/// Shares of each operation type; they sum to 1.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Mix {
    pub read: f64,
    pub update: f64,
    pub read_modify_write: f64,
    /// Either 1 (the load workload) or 0: inserts take keys in order and
    /// do not mix with the rest.
    pub insert: f64,
}

impl Mix {
    /// `read` reads, the rest updates.
    pub fn reads(read: f64) -> Mix {
        Mix {
            read,
            update: 1.0 - read,
            read_modify_write: 0.0,
            insert: 0.0,
        }
    }

    pub fn share(&self, op: Op) -> f64 {
        match op {
            Op::Read => self.read,
            Op::Update => self.update,
            Op::ReadModifyWrite => self.read_modify_write,
            Op::Insert => self.insert,
        }
    }

    /// The operation a uniform draw `u` in [0, 1) picks.
    pub fn pick(&self, u: f64) -> Op {
        let mut left = u;
        for op in Op::ALL {
            let share = self.share(op);
            if left < share {
                return op;
            }
            left -= share;
        }
        // Rounding can leave u just past the last non-zero share.
        Op::ALL
            .into_iter()
            .rev()
            .find(|&op| self.share(op) > 0.0)
            .unwrap_or(Op::Read)
    }
}
