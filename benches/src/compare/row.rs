//! What one measured run of `compare` is: a [`Spec`] says what to run, a
//! [`Row`] holds what one repetition measured, and the row labels, in the
//! table's order, say whether each system makes an acknowledged write
//! durable.

use ringkv_client::Level;
use serde::Serialize;

use crate::config::{Mix, Target as TargetKind};
use crate::report::Report;

// Labels of the rows, also the keys of the ratio columns.
pub(super) const ECHO: &str = "tonic echo, 1 server";
pub(super) const ECHO_3: &str = "tonic echo, 3 servers";
pub(super) const STORAGE: &str = "RocksDB in process, periodic";
pub(super) const STORAGE_ALWAYS: &str = "RocksDB in process, always";
pub(super) const SINGLE: &str = "ringkv 1 node";
pub(super) const CLUSTER: &str = "ringkv 3 nodes";
pub(super) const CLUSTER_READ_ONE: &str = "ringkv 3 nodes, get R=ONE";
pub(super) const CLUSTER_ONE_NODE: &str = "ringkv 3 nodes, via 1 node";
pub(super) const CLUSTER_ALWAYS: &str = "ringkv 3 nodes, always";
pub(super) const SIX: &str = "ringkv 6 nodes";
pub(super) const SIX_ONE_NODE: &str = "ringkv 6 nodes, via 1 node";
pub(super) const SECURE_SINGLE: &str = "ringkv 1 node, TLS+mTLS+token";
pub(super) const SECURE_CLUSTER: &str = "ringkv 3 nodes, TLS+mTLS+token";
pub(super) const ETCD: &str = "etcd 3 members";
pub(super) const ETCD_SERIALIZABLE: &str = "etcd 3 members, serializable";
pub(super) const ETCD_LEADER: &str = "etcd 3 members, leader only";

/// Whether an acknowledged write survives a crash of the machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum Durability {
    /// The echo servers store nothing.
    NoData,
    /// `sync = periodic`: acknowledged before it is fsynced, so the last
    /// sync interval of writes can be lost. Marked † in the table.
    NotDurable,
    /// Fsynced before the acknowledgement (ringkv and RocksDB `always`;
    /// etcd, on a majority).
    Durable,
}

/// Every row label, in the order the table lists them.
const LABELS: [(&str, Durability); 16] = [
    (ECHO, Durability::NoData),
    (ECHO_3, Durability::NoData),
    (STORAGE, Durability::NotDurable),
    (STORAGE_ALWAYS, Durability::Durable),
    (SINGLE, Durability::NotDurable),
    (CLUSTER, Durability::NotDurable),
    (CLUSTER_READ_ONE, Durability::NotDurable),
    (CLUSTER_ONE_NODE, Durability::NotDurable),
    (CLUSTER_ALWAYS, Durability::Durable),
    (SIX, Durability::NotDurable),
    (SIX_ONE_NODE, Durability::NotDurable),
    (SECURE_SINGLE, Durability::NotDurable),
    (SECURE_CLUSTER, Durability::NotDurable),
    (ETCD, Durability::Durable),
    (ETCD_SERIALIZABLE, Durability::Durable),
    (ETCD_LEADER, Durability::Durable),
];

/// The durability of the system a row measures.
pub(super) fn durability(label: &str) -> Durability {
    LABELS
        .iter()
        .find(|(l, _)| *l == label)
        .map_or(Durability::NoData, |&(_, d)| d)
}

/// Where a label comes in the table (unknown labels last).
pub(super) fn position(label: &str) -> usize {
    LABELS
        .iter()
        .position(|(l, _)| *l == label)
        .unwrap_or(LABELS.len())
}

/// What a row measures, in the order a system's rows are listed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum Op {
    /// 100% blind overwrites of preloaded keys.
    Put,
    /// 100% reads of preloaded keys.
    Get,
    /// YCSB workload A (50% reads, 50% updates), latency over both.
    A,
    /// YCSB workload C (100% reads).
    C,
}

impl Op {
    pub(super) fn mix(self) -> Mix {
        match self {
            Op::Put => Mix::reads(0.0),
            Op::Get | Op::C => Mix::reads(1.0),
            Op::A => Mix::reads(0.5),
        }
    }

    pub(super) fn label(self) -> &'static str {
        match self {
            Op::Put => "put",
            Op::Get => "get",
            Op::A => "A",
            Op::C => "C",
        }
    }
}

/// One measured run of the comparison.
pub(super) struct Spec {
    /// The row's label.
    pub(super) system: &'static str,
    pub(super) op: Op,
    pub(super) kind: TargetKind,
    /// Write every key once first.
    pub(super) preload: bool,
    /// Open loop at this rate; `None` for closed loop.
    pub(super) target_rate: Option<f64>,
    /// The ringkv read level the target uses, when not QUORUM (recorded in
    /// the run's report).
    pub(super) read_level: Option<Level>,
}

impl Spec {
    /// A closed-loop run of `op` on keys written before.
    pub(super) fn new(system: &'static str, op: Op, kind: TargetKind) -> Spec {
        Spec {
            system,
            op,
            kind,
            preload: false,
            target_rate: None,
            read_level: None,
        }
    }

    /// The same run, writing every key once first.
    pub(super) fn preloaded(self) -> Spec {
        Spec {
            preload: true,
            ..self
        }
    }
}

/// What one repetition measured for one system and operation; the JSON
/// output keeps every one of them.
#[derive(Serialize)]
pub(super) struct Row {
    pub(super) system: &'static str,
    pub(super) op: Op,
    /// The repetition, from 1.
    pub(super) rep: usize,
    /// The system's place in its repetition's random order, from 1.
    pub(super) turn: usize,
    /// Open-loop rate of the run (`--half-load` rows); `null` for closed loop.
    pub(super) target_rate: Option<f64>,
    pub(super) durability: Durability,
    /// `null` when the run failed; see `error`.
    pub(super) ops_per_sec: Option<f64>,
    pub(super) p50_us: Option<u64>,
    pub(super) p99_us: Option<u64>,
    pub(super) errors: u64,
    /// ops/s ÷ the one echo server's ops/s for the same operation in the
    /// same repetition.
    pub(super) vs_echo: Option<f64>,
    /// ops/s ÷ etcd's (round robin, linearizable) ops/s for the same
    /// operation in the same repetition.
    pub(super) vs_etcd: Option<f64>,
    /// CPU µs (user + system) of the system's server processes per
    /// operation; for RocksDB in process, of this whole process.
    pub(super) server_cpu_us_per_op: Option<f64>,
    /// Busy CPU µs of the whole machine (`/proc/stat`) per operation.
    pub(super) machine_cpu_us_per_op: Option<f64>,
    /// CPU µs of this process (the load generator) per operation.
    pub(super) client_cpu_us_per_op: Option<f64>,
    /// Share of the machine's CPU time the hypervisor stole during the
    /// measured phase.
    pub(super) steal_share: Option<f64>,
    /// The machine's 1-minute load average when the measured run ended:
    /// how much else was competing for the CPUs.
    pub(super) load_average: Option<f64>,
    /// Why the row has no figures.
    pub(super) error: Option<String>,
    /// The full report of the run.
    pub(super) report: Option<Report>,
}

impl Row {
    /// A row with no figures.
    pub(super) fn failed(
        system: &'static str,
        op: Op,
        rep: usize,
        turn: usize,
        error: &anyhow::Error,
    ) -> Row {
        Row {
            system,
            op,
            rep,
            turn,
            target_rate: None,
            durability: durability(system),
            ops_per_sec: None,
            p50_us: None,
            p99_us: None,
            errors: 0,
            vs_echo: None,
            vs_etcd: None,
            server_cpu_us_per_op: None,
            machine_cpu_us_per_op: None,
            client_cpu_us_per_op: None,
            steal_share: None,
            load_average: None,
            error: Some(format!("{error:#}")),
            report: None,
        }
    }

    /// The row with only throughput set: for tests of what is computed
    /// from rows.
    #[cfg(test)]
    pub(super) fn measured(system: &'static str, op: Op, rep: usize, ops: f64) -> Row {
        let mut row = Row::failed(system, op, rep, 1, &anyhow::anyhow!("placeholder"));
        row.error = None;
        row.ops_per_sec = Some(ops);
        row
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periodic_rows_are_not_durable() {
        assert_eq!(durability(CLUSTER), Durability::NotDurable);
        assert_eq!(durability(CLUSTER_READ_ONE), Durability::NotDurable);
        assert_eq!(durability(CLUSTER_ALWAYS), Durability::Durable);
        assert_eq!(durability(ETCD_LEADER), Durability::Durable);
        assert_eq!(durability(ECHO_3), Durability::NoData);
    }

    #[test]
    fn labels_are_distinct_and_ordered() {
        let labels: std::collections::HashSet<&str> = LABELS.iter().map(|(l, _)| *l).collect();
        assert_eq!(labels.len(), LABELS.len());
        assert!(position(ECHO) < position(CLUSTER));
        assert!(position(CLUSTER) < position(ETCD));
        assert_eq!(position("no such row"), LABELS.len());
    }
}
