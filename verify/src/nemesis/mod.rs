//! Nemeses: the faults a run injects, how they are drawn from the run's
//! seed, and the scheduler that keeps up to two of them active at once.
//!
//! | family     | faults                                                        |
//! |------------|---------------------------------------------------------------|
//! | process    | SIGKILL then restart; SIGSTOP then SIGCONT                    |
//! | network    | halves, an isolated node, one-way, bridge (iptables DROP)     |
//! | clock      | wall clock stepped forward, stepped back, skewed a little     |
//! | disk       | lost WAL tail, data directory restored from an older copy,   |
//! |            | full disk, failed fsync                                       |
//! | membership | a spare joins; a member leaves (and becomes a spare again)   |
//!
//! # What the schedule never does
//!
//! The harness checks that no *acknowledged* write is lost, so it must not
//! inject what legitimately loses one. A write acknowledged at W = 2 is on
//! two disks; a fault that loses a disk's recent writes on two nodes before
//! anti-entropy copied them back could lose it, and that would be the
//! schedule's doing, not a bug. So every disk fault of a run hits the
//! same node (the run's *disk victim*, drawn from the seed), one at a
//! time: its losses are always covered by the other replicas.
//!
//! Each node carries at most one fault of its own at a time (process,
//! clock, disk, membership), and one network partition at most is in
//! force; within that, any two faults may overlap, partitions with kills,
//! clock steps with a leave, a paused old replica with a joining node.

mod disk;
mod membership;

use std::collections::BTreeSet;
use std::fmt;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use ringkv_tests::faults::Rng;

use crate::cluster::Cluster;
use crate::history::{History, Kind, Op, Workload, F};
use crate::net::Partition;

/// Families of faults, for the schedule's mix and the report's counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    Process,
    Network,
    Clock,
    Disk,
    Membership,
}

impl Family {
    pub const ALL: [Family; 5] = [
        Family::Process,
        Family::Network,
        Family::Clock,
        Family::Disk,
        Family::Membership,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Family::Process => "process",
            Family::Network => "network",
            Family::Clock => "clock",
            Family::Disk => "disk",
            Family::Membership => "membership",
        }
    }

    pub fn parse(s: &str) -> Option<Family> {
        Family::ALL.into_iter().find(|f| f.name() == s)
    }

    /// Relative weight in a mixed schedule.
    fn weight(self) -> u64 {
        match self {
            Family::Process => 6,
            Family::Network => 7,
            Family::Clock => 4,
            Family::Disk => 3,
            Family::Membership => 1,
        }
    }
}

/// One fault with its targets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    Kill {
        node: usize,
    },
    Pause {
        node: usize,
    },
    Partition(Partition),
    /// The node's wall clock reads `offset_ms` off the system clock.
    Clock {
        node: usize,
        offset_ms: i64,
    },
    /// SIGKILL, the newest WAL file loses its last `bytes`, restart: what
    /// a power loss does to writes not yet synced.
    LoseWalTail {
        node: usize,
        bytes: u64,
    },
    /// A copy of the data directory is taken now (the node paused for
    /// it, as a filesystem snapshot would be); at the heal the node is
    /// killed and restarted on that copy.
    RestoreOld {
        node: usize,
    },
    /// The node's filesystem is filled; at the heal the filler is removed
    /// and the node restarted (a node whose log could not be written
    /// refuses writes until an operator restarts it).
    DiskFull {
        node: usize,
    },
    /// The node's next WAL sync fails; restarted at the heal.
    FsyncFail {
        node: usize,
    },
    /// A spare slot starts and joins by itself.
    Join {
        node: usize,
    },
    /// A member leaves: staged, planned, committed; once it holds no
    /// partition it is stopped and wiped, and becomes a spare.
    Leave {
        node: usize,
    },
}

impl Fault {
    pub fn family(&self) -> Family {
        match self {
            Fault::Kill { .. } | Fault::Pause { .. } => Family::Process,
            Fault::Partition(_) => Family::Network,
            Fault::Clock { .. } => Family::Clock,
            Fault::LoseWalTail { .. }
            | Fault::RestoreOld { .. }
            | Fault::DiskFull { .. }
            | Fault::FsyncFail { .. } => Family::Disk,
            Fault::Join { .. } | Fault::Leave { .. } => Family::Membership,
        }
    }

    /// A short name of the fault's kind, for counts.
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::Kill { .. } => "kill",
            Fault::Pause { .. } => "pause",
            Fault::Partition(Partition::Halves(..)) => "partition-halves",
            Fault::Partition(Partition::Isolated(_)) => "partition-isolated",
            Fault::Partition(Partition::OneWay { .. }) => "partition-one-way",
            Fault::Partition(Partition::Bridge { .. }) => "partition-bridge",
            Fault::Clock { offset_ms, .. } if offset_ms.abs() < 500 => "clock-skew",
            Fault::Clock { offset_ms, .. } if *offset_ms > 0 => "clock-forward",
            Fault::Clock { .. } => "clock-back",
            Fault::LoseWalTail { .. } => "disk-lost-wal-tail",
            Fault::RestoreOld { .. } => "disk-restore-old-copy",
            Fault::DiskFull { .. } => "disk-full",
            Fault::FsyncFail { .. } => "disk-fsync-fail",
            Fault::Join { .. } => "join",
            Fault::Leave { .. } => "leave",
        }
    }

    /// The node the fault belongs to, if it is one node's.
    fn node(&self) -> Option<usize> {
        match self {
            Fault::Partition(_) => None,
            Fault::Kill { node }
            | Fault::Pause { node }
            | Fault::Clock { node, .. }
            | Fault::LoseWalTail { node, .. }
            | Fault::RestoreOld { node }
            | Fault::DiskFull { node }
            | Fault::FsyncFail { node }
            | Fault::Join { node }
            | Fault::Leave { node } => Some(*node),
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Partition(p) => write!(f, "partition: {p}"),
            Fault::Clock { node, offset_ms } => {
                write!(f, "clock of node {node} off by {offset_ms:+} ms")
            }
            Fault::LoseWalTail { node, bytes } => {
                write!(f, "node {node} loses the last {bytes} bytes of its WAL")
            }
            other => write!(f, "{} node {}", other.kind(), other.node().unwrap_or(0)),
        }
    }
}

/// What a run's nemesis does.
#[derive(Clone, Debug)]
pub struct NemesisSpec {
    pub families: Vec<Family>,
    /// Faults active at once, at most.
    pub max_active: usize,
    /// Each fault lasts between these.
    pub fault_for: (Duration, Duration),
    /// Pause between scheduler steps, between these.
    pub gap: (Duration, Duration),
    /// Faults to inject in this order instead of drawing them (a test's
    /// fixed schedule); `families` is then ignored.
    pub script: Vec<Fault>,
}

/// A fault in force, with when to heal it.
struct Active {
    fault: Fault,
    heal_at: Instant,
    /// Disk restores: where the older copy is.
    snapshot: Option<std::path::PathBuf>,
    /// Its invocation in the history.
    recorded: Op,
}

/// History processes of the nemesis: one per fault (several are open at
/// once), counted down from here so they never meet a client's.
const NEMESIS_PROCESS: u32 = u32::MAX - 1;

/// How long the anti-entropy passes after a disk fault that lost writes
/// may keep failing before the run goes on regardless (the fault's window
/// then stays open to the end of the history).
const DISK_LOSS_SETTLE: Duration = Duration::from_secs(90);

impl Fault {
    /// Whether the fault takes a replica's disk back in time, so that a
    /// quorum may miss an acknowledged write until anti-entropy restores
    /// it (see `check::degraded_windows`).
    pub fn loses_recent_writes(&self) -> bool {
        matches!(self, Fault::LoseWalTail { .. } | Fault::RestoreOld { .. })
    }
}

/// The scheduler of one run.
pub struct Nemesis {
    spec: NemesisSpec,
    rng: Rng,
    /// The one node every disk fault of this run hits.
    pub disk_victim: usize,
    /// Members at the start: joins grow past it by one, leaves return.
    base_members: usize,
    active: Vec<Active>,
    /// Every fault injected, in order, with its start (since the run).
    pub log: Vec<(Duration, Fault)>,
    history: History,
    /// Disk faults that lost writes and are healed, whose history entry
    /// completes once the replicas agree again.
    settling: Vec<Op>,
}

impl Nemesis {
    pub fn new(spec: NemesisSpec, rng: Rng, cluster: &Cluster, history: &History) -> Nemesis {
        let mut rng = rng;
        let members: Vec<usize> = cluster.members.iter().copied().collect();
        let disk_victim = members[rng.below(members.len())];
        Nemesis {
            spec,
            rng,
            disk_victim,
            base_members: members.len(),
            active: Vec::new(),
            log: Vec::new(),
            history: history.clone(),
            settling: Vec::new(),
        }
    }

    /// Faults in force now.
    pub fn active(&self) -> usize {
        self.active.len()
    }

    /// One scheduler step: heals what is due, then injects a new fault if
    /// fewer than `max_active` are in force. Returns the pause to take
    /// before the next step.
    pub async fn step(&mut self, cluster: &mut Cluster, since: Instant) -> Result<Duration> {
        self.heal_due(cluster, false).await?;
        if !self.settling.is_empty() {
            self.settle(cluster, since).await?;
        }
        if self.active.len() < self.spec.max_active {
            if let Some(fault) = self.draw(cluster) {
                println!("[{:>6.1?}] inject {fault}", since.elapsed());
                let mut op = Op::new(
                    NEMESIS_PROCESS - self.log.len() as u32,
                    Workload::Nemesis,
                    F::Fault,
                    fault.kind(),
                );
                op.value = Some(fault.to_string());
                let recorded = self.history.invoke(op);
                let snapshot = match self.inject(cluster, &fault).await {
                    Ok(snapshot) => snapshot,
                    // Other faults can keep a leave from being committed
                    // (no member to plan it, an answer lost). It may still
                    // have been staged, or even committed: it stays in
                    // force like any fault, and healing it stages and
                    // commits it again until the node has left.
                    Err(e) if matches!(fault, Fault::Leave { .. }) => {
                        println!(
                            "[{:>6.1?}] leave not confirmed ({e:#}); the heal finishes it",
                            since.elapsed()
                        );
                        None
                    }
                    Err(e) => return Err(e.context(format!("injecting {fault}"))),
                };
                let lasts = self
                    .rng
                    .between(self.spec.fault_for.0, self.spec.fault_for.1);
                // A lost WAL tail is over once the node is back.
                let heal_at = match fault {
                    Fault::LoseWalTail { .. } => Instant::now(),
                    _ => Instant::now() + lasts,
                };
                self.log.push((since.elapsed(), fault.clone()));
                self.active.push(Active {
                    fault,
                    heal_at,
                    snapshot,
                    recorded,
                });
            }
        }
        Ok(self.rng.between(self.spec.gap.0, self.spec.gap.1))
    }

    /// After a disk fault that lost writes: heals everything else, then
    /// has every member run one full anti-entropy pass, and closes the
    /// fault's window in the history; no new fault starts meanwhile.
    ///
    /// A pass started after the heal exchanges every partition with every
    /// replica, in both directions, so once each member has finished one,
    /// whatever the disk lost and another replica held is back, and
    /// quorums meet every acknowledged write again. (Waiting for equal
    /// Merkle roots instead never ends while the clients keep writing:
    /// some write is always on its way to its third replica.) If the
    /// passes keep failing, the window stays open (`info`): the reads
    /// after it go unchecked, and the run's final convergence check
    /// reports what did not converge.
    async fn settle(&mut self, cluster: &mut Cluster, since: Instant) -> Result<()> {
        self.heal_due(cluster, true).await?;
        let started = Instant::now();
        let mut repaired = false;
        while !repaired && started.elapsed() < DISK_LOSS_SETTLE {
            repaired = cluster.wait_whole().await.is_ok() && repair_everywhere(cluster).await;
            if !repaired {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
        println!(
            "[{:>6.1?}] {} after the disk fault",
            since.elapsed(),
            if repaired {
                "every member ran a full anti-entropy pass"
            } else {
                "anti-entropy passes kept failing"
            }
        );
        let kind = if repaired { Kind::Ok } else { Kind::Info };
        for op in std::mem::take(&mut self.settling) {
            self.history.complete(&op, kind, |_| {});
        }
        Ok(())
    }

    /// Heals every fault in force, waiting for leaves to finish. Disk
    /// faults that lost writes stay open in the history: the run closes
    /// them once the replicas agree ([`Nemesis::close_windows`]).
    pub async fn heal_all(&mut self, cluster: &mut Cluster) -> Result<()> {
        self.heal_due(cluster, true).await
    }

    /// Closes the windows of healed disk faults, once the run has seen
    /// the replicas agree.
    pub fn close_windows(&mut self) {
        for op in std::mem::take(&mut self.settling) {
            self.history.complete(&op, Kind::Ok, |_| {});
        }
    }

    async fn heal_due(&mut self, cluster: &mut Cluster, all: bool) -> Result<()> {
        // Leaves last: healing one waits until the leaver holds nothing,
        // and its transfers wait for every old replica, so a node still
        // killed or paused by a fault healed after it would hold the leave
        // (and the heal) forever.
        self.active
            .sort_by_key(|a| matches!(a.fault, Fault::Leave { .. }));
        let mut i = 0;
        while i < self.active.len() {
            if !all && self.active[i].heal_at > Instant::now() {
                i += 1;
                continue;
            }
            let active = self.active.remove(i);
            let done = heal(cluster, &active, all)
                .await
                .with_context(|| format!("healing {}", active.fault))?;
            if !done {
                // A leave still transferring: look again next step.
                self.active.insert(i, active);
                i += 1;
            } else if active.fault.loses_recent_writes() {
                self.settling.push(active.recorded);
            } else {
                self.history.complete(&active.recorded, Kind::Ok, |_| {});
            }
        }
        Ok(())
    }

    /// Draws a fault that fits with those in force, or `None` if none
    /// does now.
    fn draw(&mut self, cluster: &Cluster) -> Option<Fault> {
        if !self.spec.script.is_empty() {
            return Some(self.spec.script.remove(0));
        }
        let busy: BTreeSet<usize> = self.active.iter().filter_map(|a| a.fault.node()).collect();
        let partitioned = self
            .active
            .iter()
            .any(|a| a.fault.family() == Family::Network);
        let disk_busy = self
            .active
            .iter()
            .any(|a| matches!(a.fault.family(), Family::Disk | Family::Membership));
        let free: Vec<usize> = cluster
            .running()
            .into_iter()
            .filter(|n| !busy.contains(n))
            .collect();
        let total: u64 = self.spec.families.iter().map(|f| f.weight()).sum();
        let mut pick = self.rng.next_u64() % total.max(1);
        let family = *self.spec.families.iter().find(|f| {
            if pick < f.weight() {
                true
            } else {
                pick -= f.weight();
                false
            }
        })?;
        match family {
            Family::Process => {
                let node = *self.pick(&free)?;
                Some(if self.rng.below(2) == 0 {
                    Fault::Kill { node }
                } else {
                    Fault::Pause { node }
                })
            }
            Family::Network if !partitioned => Some(Fault::Partition(self.partition(cluster))),
            Family::Clock => {
                let node = *self.pick(&free)?;
                let offset_ms = match self.rng.below(3) {
                    0 => 2_000 + self.rng.below(6_000) as i64,
                    1 => -(2_000 + self.rng.below(6_000) as i64),
                    _ => self.rng.below(800) as i64 - 400,
                };
                Some(Fault::Clock { node, offset_ms })
            }
            Family::Disk if !disk_busy && free.contains(&self.disk_victim) => {
                let node = self.disk_victim;
                Some(match self.rng.below(4) {
                    0 => Fault::LoseWalTail {
                        node,
                        bytes: 1 + self.rng.below(64 * 1024) as u64,
                    },
                    1 => Fault::RestoreOld { node },
                    2 => Fault::DiskFull { node },
                    _ => Fault::FsyncFail { node },
                })
            }
            Family::Membership if !disk_busy => self.membership(cluster, &free),
            _ => None,
        }
    }

    fn pick<'a>(&mut self, from: &'a [usize]) -> Option<&'a usize> {
        (!from.is_empty()).then(|| &from[self.rng.below(from.len())])
    }

    fn partition(&mut self, cluster: &Cluster) -> Partition {
        let mut members: Vec<usize> = cluster.members.iter().copied().collect();
        // Shuffle (Fisher-Yates) so each split is a fresh grouping.
        for i in (1..members.len()).rev() {
            members.swap(i, self.rng.below(i + 1));
        }
        let n = members.len();
        match self.rng.below(4) {
            0 => {
                let cut = 1 + self.rng.below(n - 1);
                Partition::Halves(
                    members[..cut].iter().copied().collect(),
                    members[cut..].iter().copied().collect(),
                )
            }
            1 => Partition::Isolated(members[0]),
            2 => Partition::OneWay {
                from: members[0],
                to: members[1],
            },
            _ => {
                let cut = 1 + self.rng.below(n - 2);
                Partition::Bridge {
                    bridge: members[0],
                    left: members[1..=cut].iter().copied().collect(),
                    right: members[cut + 1..].iter().copied().collect(),
                }
            }
        }
    }

    async fn inject(
        &mut self,
        cluster: &mut Cluster,
        fault: &Fault,
    ) -> Result<Option<std::path::PathBuf>> {
        match fault {
            Fault::Kill { node } => cluster.nodes[*node].kill(),
            Fault::Pause { node } => cluster.nodes[*node].pause(true).await?,
            Fault::Partition(p) => cluster.net.partition(p)?,
            Fault::Clock { node, offset_ms } => {
                cluster.nodes[*node]
                    .client()
                    .set_clock_offset(0, *offset_ms)
                    .await?
            }
            Fault::LoseWalTail { node, bytes } => {
                disk::lose_wal_tail(&mut cluster.nodes[*node], *bytes).await?
            }
            Fault::RestoreOld { node } => {
                return disk::snapshot(&cluster.nodes[*node], cluster.dir())
                    .await
                    .map(Some)
            }
            Fault::DiskFull { node } => disk::fill(&cluster.nodes[*node])?,
            Fault::FsyncFail { node } => {
                cluster.nodes[*node].client().fail_next_wal_sync(0).await?
            }
            Fault::Join { node } => membership::join(cluster, *node).await?,
            Fault::Leave { node } => {
                let busy: BTreeSet<usize> =
                    self.active.iter().filter_map(|a| a.fault.node()).collect();
                let via: Vec<usize> = cluster
                    .running()
                    .into_iter()
                    .filter(|n| !busy.contains(n))
                    .collect();
                membership::leave(cluster, *node, &via).await?
            }
        }
        Ok(None)
    }

    fn membership(&mut self, cluster: &Cluster, free: &[usize]) -> Option<Fault> {
        let members = cluster.members.len();
        if members <= self.base_members {
            let spare = (0..cluster.nodes.len())
                .find(|s| !cluster.members.contains(s) && !cluster.nodes[*s].is_running())?;
            Some(Fault::Join { node: spare })
        } else {
            let candidates: Vec<usize> = free
                .iter()
                .copied()
                .filter(|&n| n != self.disk_victim)
                .collect();
            let node = *self.pick(&candidates)?;
            Some(Fault::Leave { node })
        }
    }
}

/// Runs a full anti-entropy pass (`Admin.StartRepair`, every partition) on
/// every running member; `true` if each finished without an error.
async fn repair_everywhere(cluster: &Cluster) -> bool {
    for i in cluster.running() {
        match cluster.nodes[i].client().repair(0, None).await {
            Ok(report) if report.errors.is_empty() => {}
            _ => return false,
        }
    }
    true
}

/// Heals `active`; `false` when it cannot be healed yet (a leave whose
/// transfers are still running, unless `wait`).
async fn heal(cluster: &mut Cluster, active: &Active, wait: bool) -> Result<bool> {
    match &active.fault {
        Fault::Kill { node } => cluster.nodes[*node].start().await?,
        Fault::Pause { node } => cluster.nodes[*node].pause(false).await?,
        Fault::Partition(_) => cluster.net.heal()?,
        Fault::Clock { node, .. } => cluster.nodes[*node].client().set_clock_offset(0, 0).await?,
        Fault::LoseWalTail { .. } => {}
        Fault::RestoreOld { node } => {
            let snapshot = active
                .snapshot
                .as_ref()
                .context("a restore without its snapshot")?;
            disk::restore(&mut cluster.nodes[*node], snapshot).await?
        }
        Fault::DiskFull { node } => disk::unfill(&mut cluster.nodes[*node]).await?,
        Fault::FsyncFail { node } => {
            let node = &mut cluster.nodes[*node];
            node.kill();
            node.start().await?
        }
        Fault::Join { .. } => {}
        Fault::Leave { node } => return membership::finish_leave(cluster, *node, wait).await,
    }
    Ok(true)
}
