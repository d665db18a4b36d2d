//! The claimant's side of a cluster change: staging, plans, commits and
//! the end of a change (see the module `rebalance`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::info;

use super::plan::{self, Candidate, Change, Staged};
use super::{Committed, PlanView, Rebalance};
use ringkv_core::error::{Error, Result};
use ringkv_core::membership::detector::Liveness;
use ringkv_core::ring::Layout;
use ringkv_core::version::NodeId;
use ringkv_storage::{Cf, Engine, WriteBatch};

/// `meta` key of the removals staged at the claimant (node ids, 8 bytes
/// big-endian each).
const REMOVED_KEY: &[u8] = b"removed";

/// Gossip rounds a joiner must have been seen before an automatic commit,
/// so that nodes started together join in one change.
const AUTO_JOIN_SETTLE_ROUNDS: u32 = 3;

/// Partitions named in a refusal's message; the rest are counted.
const SHOWN_PARTITIONS: usize = 8;

impl Rebalance {
    /// Stages the removal of a dead member (runs on the claimant).
    pub fn remove(&self, node: NodeId) -> Result<String> {
        let layout = self.layout()?;
        if !layout.contains(node) {
            return Err(Error::FailedPrecondition(format!(
                "{node} is not a member of layout v{}; `ringkv cluster layout` lists the members",
                layout.version()
            )));
        }
        if node == self.me() {
            return Err(Error::FailedPrecondition(
                "a node cannot remove itself; use `ringkv cluster leave` to drain it".into(),
            ));
        }
        if self.cluster.liveness(node) != Liveness::Dead {
            return Err(Error::FailedPrecondition(format!(
                "{node} is not dead as seen from the claimant {}; drain a running node with `ringkv cluster leave {node}`, or stop it and wait until it shows dead",
                self.me()
            )));
        }
        let mut removed = self.removed.lock().unwrap_or_else(|p| p.into_inner());
        removed.insert(node);
        self.store_removed(&removed)?;
        Ok(format!(
            "removal of {node} staged; run `ringkv cluster plan`, then `ringkv cluster commit`"
        ))
    }

    pub(super) fn store_removed(&self, removed: &BTreeSet<NodeId>) -> Result<()> {
        let mut batch = WriteBatch::new();
        batch.put(Cf::Meta, REMOVED_KEY, encode_ids(removed));
        self.replica.engine().write(batch)
    }

    /// The changes staged against `layout`.
    pub(super) fn staged(&self, layout: &Layout) -> Staged {
        let candidates: Vec<Candidate> = self
            .cluster
            .members()
            .into_iter()
            .map(|m| Candidate {
                id: m.info.id,
                name: m.info.name,
                address: m.info.address,
                zone: m.info.zone,
                weight: m.info.weight,
                status: m.info.status,
                join: m.info.join,
                alive: m.liveness == Liveness::Alive,
            })
            .collect();
        let removed = self
            .removed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        plan::stage(layout, &candidates, &removed)
    }

    /// What a commit now would publish (answers `Admin.Plan`).
    pub fn plan(&self) -> Result<PlanView> {
        let current = self.layout()?;
        let staged = self.staged(&current);
        let blocked = self.blocked(&current);
        let next = if staged.changes.is_empty() || current.in_transition() {
            None
        } else {
            Some(self.compute(&staged, &current)?)
        };
        let (moves, minimum_moves) = match &next {
            None => (Vec::new(), 0),
            Some(next) => {
                let estimates = self.partition_sizes(&current);
                let moves = plan::moves(&current, next, |n| self.cluster.is_alive(n))
                    .into_iter()
                    .map(|m| {
                        let bytes = estimates.get(&m.from).copied().unwrap_or(0);
                        (m, bytes)
                    })
                    .collect();
                (moves, next.minimum_moves_from(&current))
            }
        };
        let blocked = blocked
            .or_else(|| {
                next.as_ref()
                    .and_then(|next| self.without_source(&staged, &current, next))
            })
            .or_else(|| {
                staged
                    .changes
                    .is_empty()
                    .then(|| "nothing is staged".to_string())
            });
        Ok(PlanView {
            current,
            changes: staged.changes,
            next,
            moves,
            minimum_moves,
            blocked,
        })
    }

    pub(super) fn compute(&self, staged: &Staged, current: &Layout) -> Result<Layout> {
        if staged.members.is_empty() {
            return Err(Error::FailedPrecondition(
                "the staged changes would leave no member; keep at least one node".into(),
            ));
        }
        Layout::compute(
            &staged.members,
            self.config.cluster.replication,
            self.config.cluster.partitions,
            Some(current),
        )
    }

    /// Why `next` must not be committed because some partition would have
    /// no replica that ever held its data: every old replica of it is
    /// being removed, so nobody could stream it (`safety`, rule 3).
    pub(super) fn without_source(
        &self,
        staged: &Staged,
        current: &Layout,
        next: &Layout,
    ) -> Option<String> {
        let removed: BTreeSet<NodeId> = staged
            .changes
            .iter()
            .filter_map(|c| match c {
                Change::Remove(node) => Some(*node),
                _ => None,
            })
            .collect();
        let orphans = next.partitions_without_source(current, &removed);
        if orphans.is_empty() {
            return None;
        }
        let shown: Vec<String> = orphans
            .iter()
            .take(SHOWN_PARTITIONS)
            .map(|p| p.to_string())
            .collect();
        Some(format!(
            "the staged removals would leave {} partition(s) ({}{}) with no replica holding their data: every replica of each is being removed; bring one of those nodes back, or remove fewer at once",
            orphans.len(),
            shown.join(", "),
            if orphans.len() > SHOWN_PARTITIONS { ", ..." } else { "" }
        ))
    }

    /// Why no change can be committed now, if so.
    pub(super) fn blocked(&self, layout: &Layout) -> Option<String> {
        if !layout.in_transition() {
            return None;
        }
        let receivers = layout.receivers();
        let done = self.receivers_done(layout);
        let waiting = self.unacknowledged(layout);
        let waiting = match waiting.is_empty() {
            true => String::new(),
            false => format!(
                "; waiting for {} to hold it (a member that is down or cut off holds the change until it is back)",
                super::safety::listed(&waiting)
            ),
        };
        Some(format!(
            "layout v{} is still being transferred ({done} of {} receiving nodes done{waiting}); watch `ringkv cluster transfers`, then plan again",
            layout.version(),
            receivers.len()
        ))
    }

    pub(super) fn receivers_done(&self, layout: &Layout) -> usize {
        let members = self.cluster.members();
        layout
            .receivers()
            .iter()
            .filter(|r| {
                members
                    .iter()
                    .any(|m| m.info.id == **r && m.info.transfers_done >= layout.version())
            })
            .count()
    }

    /// Average bytes per partition replica of each member, from the sizes
    /// they gossip.
    pub(super) fn partition_sizes(&self, layout: &Layout) -> BTreeMap<NodeId, u64> {
        let counts = layout.replica_counts();
        self.cluster
            .members()
            .into_iter()
            .map(|m| {
                let held = counts.get(&m.info.id).copied().unwrap_or(0).max(1) as u64;
                (m.info.id, m.info.storage_bytes / held)
            })
            .collect()
    }

    /// Publishes the staged changes (answers `Admin.Commit` on the
    /// claimant). `expected` is the layout version the plan was made
    /// against.
    pub async fn commit(&self, expected: u64) -> Result<Committed> {
        let _serial = self.commit_lock.lock().await;
        let current = self.layout()?;
        if self.cluster.claimant() != Some(self.me()) {
            return Err(Error::FailedPrecondition(format!(
                "node {} is not the claimant; send the commit to {}",
                self.me(),
                self.cluster
                    .claimant()
                    .map(|c| c.to_string())
                    .unwrap_or_else(|| "the lowest live member".into())
            )));
        }
        if let Some(why) = self.blocked(&current) {
            return Err(Error::FailedPrecondition(why));
        }
        if current.version() != expected {
            return Err(Error::FailedPrecondition(format!(
                "stale plan: it was made against layout v{expected}, the cluster is at v{}; run `ringkv cluster plan` again",
                current.version()
            )));
        }
        let staged = self.staged(&current);
        if staged.changes.is_empty() {
            return Err(Error::FailedPrecondition(
                "nothing is staged: start a node with seeds (or `ringkv cluster join`), `leave`, `remove`, or change a weight first".into(),
            ));
        }
        let next = self.compute(&staged, &current)?;
        if let Some(why) = self.without_source(&staged, &current, &next) {
            return Err(Error::FailedPrecondition(why));
        }
        let moves = next.moves_from(&current);
        let next = if moves == 0 {
            next
        } else {
            next.with_previous(&current)?
        };
        let version = next.version();
        for change in &staged.changes {
            info!(%change, version, "committing");
        }
        self.cluster.install_layout(next)?;
        let mut removed = self.removed.lock().unwrap_or_else(|p| p.into_inner());
        for change in &staged.changes {
            if let Change::Remove(node) = change {
                removed.remove(node);
            }
        }
        self.store_removed(&removed)?;
        info!(version, moves, "layout committed");
        Ok(Committed { version, moves })
    }

    /// On the claimant: ends a change whose transfers are all done, or
    /// commits automatic joins.
    pub(super) async fn claimant_duties(&self, layout: &Arc<Layout>) -> Result<()> {
        if self.cluster.claimant() != Some(self.me()) {
            self.joiners_seen
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clear();
            return Ok(());
        }
        if layout.in_transition() {
            // Every member must hold the change before it ends (`safety`,
            // rule 4): retired and settled layouts share no quorum set.
            if self.receivers_done(layout) == layout.receivers().len()
                && self.unacknowledged(layout).is_empty()
            {
                let next = layout.retired()?;
                info!(
                    version = next.version(),
                    "every transfer of layout v{} is done; retiring the old replicas",
                    layout.version()
                );
                self.cluster.install_layout(next)?;
            }
            return Ok(());
        }
        let staged = self.staged(layout);
        let joiners: Vec<NodeId> = staged.changes.iter().map(Change::node).collect();
        // Only with every member in sight: a member that merely looks dead
        // from here may be a claimant itself on the other side of a
        // partition, and two automatic commits there would diverge.
        let all_alive = layout.members().iter().all(|m| self.cluster.is_alive(m.id));
        if !self.settled(staged.only_auto_joins() && all_alive, &joiners) {
            return Ok(());
        }
        match self.commit(layout.version()).await {
            Ok(c) => info!(
                version = c.version,
                moves = c.moves,
                joiners = joiners.len(),
                "auto_join: committed the nodes that asked to join"
            ),
            // Another commit got there first; the next tick sees its layout.
            Err(Error::FailedPrecondition(why)) => info!("auto_join commit skipped: {why}"),
            Err(e) => return Err(e),
        }
        Ok(())
    }
}

impl Rebalance {
    /// Whether the automatic joiners have all been seen long enough to
    /// commit them together; forgets them when there are none.
    fn settled(&self, only_auto_joins: bool, joiners: &[NodeId]) -> bool {
        let mut seen = self.joiners_seen.lock().unwrap_or_else(|p| p.into_inner());
        if !only_auto_joins {
            seen.clear();
            return false;
        }
        let now = Instant::now();
        let settle =
            Duration::from_millis(self.config.gossip.interval_ms) * AUTO_JOIN_SETTLE_ROUNDS;
        seen.retain(|id, _| joiners.contains(id));
        for id in joiners {
            seen.entry(*id).or_insert(now);
        }
        seen.values().all(|t| now.duration_since(*t) >= settle)
    }
}

/// The removals staged here before a restart.
pub(super) fn load_removed(engine: &dyn Engine) -> Result<BTreeSet<NodeId>> {
    match engine.get(Cf::Meta, REMOVED_KEY)? {
        None => Ok(BTreeSet::new()),
        Some(bytes) => decode_ids(&bytes),
    }
}

/// The stored list of staged removals: each id as 8 bytes BE, ascending.
pub fn encode_ids(ids: &BTreeSet<NodeId>) -> Vec<u8> {
    ids.iter().flat_map(|id| id.0.to_be_bytes()).collect()
}

/// Reads [`encode_ids`] bytes; a length that is not a multiple of 8 is
/// [`Error::Corrupt`].
pub fn decode_ids(bytes: &[u8]) -> Result<BTreeSet<NodeId>> {
    if !bytes.len().is_multiple_of(8) {
        return Err(Error::Corrupt(format!(
            "staged removals: {} bytes is not a list of node ids",
            bytes.len()
        )));
    }
    Ok(bytes
        .chunks_exact(8)
        .map(|c| {
            let mut b = [0u8; 8];
            b.copy_from_slice(c);
            NodeId(u64::from_be_bytes(b))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staged_removals_round_trip() {
        let ids: BTreeSet<NodeId> = [NodeId(1), NodeId(u64::MAX), NodeId(42)].into();
        assert_eq!(decode_ids(&encode_ids(&ids)).unwrap(), ids);
        assert!(decode_ids(&[1, 2, 3]).is_err());
        assert!(decode_ids(&[]).unwrap().is_empty());
    }
}
