//! The layout a node holds: bootstrapping the first one, fetching and
//! installing newer ones of its own cluster, persisting them, and replacing a
//! dead member's entry.

use super::*;

impl Cluster {
    /// Adopts a newer layout from a peer that advertises one, or
    /// bootstraps layout v1 when this node is the one to compute it.
    pub(super) async fn sync_layout(self: &Arc<Self>) {
        let current = self.layout().map(|l| l.version()).unwrap_or(0);
        // Every peer that advertises a newer layout, newest first: the
        // newest one may be out of reach (cut off from this node while its
        // gossip still arrives through others), and another holder of a
        // newer layout then serves as well.
        let mut holders: Vec<(u64, NodeId)> = {
            let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            state
                .members()
                .filter(|m| m.id != self.me && m.layout_version > current)
                .map(|m| (m.layout_version, m.id))
                .collect()
        };
        holders.sort_by(|a, b| b.cmp(a));
        if !holders.is_empty() {
            for (_, id) in holders {
                if !self.is_alive(id) {
                    continue;
                }
                match self.fetch_layout(id).await {
                    Ok(()) => return,
                    Err(e) => warn!(peer = %id, "fetching layout failed: {e}"),
                }
            }
            return;
        }
        if current == 0 {
            self.maybe_bootstrap();
        } else {
            self.maybe_draw_cluster_id();
            self.maybe_replace();
        }
    }

    /// Replaces a dead layout member by the fresh node now running at its
    /// address: a node whose data directory was wiped comes back with a
    /// new id. The replacement is a change like any other
    /// (`Layout::replacing`): the fresh node streams the old id's
    /// partitions from the surviving replicas and counts toward no read
    /// quorum, and toward the write quorum of the new sets only, until its
    /// transfers are done and the claimant retires the change. The old id
    /// is not waited for by those transfers: its data went with its disk
    /// (`rebalance::safety`). Only the lowest live member id of the layout
    /// decides, so concurrent replacements do not race.
    fn maybe_replace(&self) {
        let Some(layout) = self.layout() else { return };
        if layout.in_transition() {
            return;
        }
        let members = self.members();
        let lowest_live = members
            .iter()
            .filter(|m| m.liveness == Liveness::Alive && layout.contains(m.info.id))
            .map(|m| m.info.id)
            .min();
        if lowest_live != Some(self.me) {
            return;
        }
        let replacement = members.iter().find_map(|fresh| {
            // A node that left is never anyone's replacement, whatever
            // this node's detector says of it: its id is done.
            if layout.contains(fresh.info.id)
                || fresh.liveness != Liveness::Alive
                || fresh.info.status == Status::Left
            {
                return None;
            }
            members
                .iter()
                .find(|old| {
                    layout.contains(old.info.id)
                        && old.info.id != fresh.info.id
                        && old.info.address == fresh.info.address
                        && old.liveness == Liveness::Dead
                })
                .map(|old| (old.info.id, fresh.info.clone()))
        });
        let Some((old, fresh)) = replacement else {
            return;
        };
        let spec = MemberSpec {
            id: fresh.id,
            zone: fresh.zone.clone(),
            weight: fresh.weight,
        };
        match layout.replacing(old, spec, self.config.cluster.replication) {
            Ok(next) => {
                info!(
                    %old,
                    new = %fresh.id,
                    address = %fresh.address,
                    version = next.version(),
                    "replacing a dead member by the new node at its address; it receives the partitions by transfer"
                );
                if let Err(e) = self.install_layout(next) {
                    warn!("storing the replacement layout failed: {e}");
                }
            }
            Err(e) => warn!("computing the replacement layout failed: {e}"),
        }
    }

    async fn fetch_layout(&self, id: NodeId) -> Result<()> {
        let Some(bytes) = self.peers.layout(id, self.config.gossip.interval()).await? else {
            return Ok(());
        };
        let layout = Layout::decode(&bytes)?;
        if layout.partitions() != self.config.cluster.partitions {
            return Err(Error::Config(format!(
                "peer {id} uses {} partitions, this node {}; partitions must match",
                layout.partitions(),
                self.config.cluster.partitions
            )));
        }
        self.admit_layout(id, &layout)?;
        self.install_layout(layout)?;
        Ok(())
    }

    /// Computes layout v1 once `bootstrap_expect` members are seen alive,
    /// if this node has the lowest id among them.
    pub fn maybe_bootstrap(&self) {
        // A node with seeds other than itself and no quorum to wait for
        // joins the seeds' cluster rather than forming its own; and nobody
        // bootstraps once some member already holds a layout.
        let own = self.config.peer_advertise_address();
        let peer_seeds = self
            .seeds
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .any(|s| *s != own);
        if peer_seeds && self.config.cluster.bootstrap_expect <= 1 {
            return;
        }
        if self.members().iter().any(|m| m.info.layout_version > 0) {
            return;
        }
        let alive: Vec<MemberInfo> = self
            .members()
            .into_iter()
            .filter(|m| m.liveness == Liveness::Alive && m.info.status != Status::Left)
            .map(|m| m.info)
            .collect();
        if alive.len() < self.config.cluster.bootstrap_expect {
            return;
        }
        if alive.iter().map(|m| m.id).min() != Some(self.me) {
            return;
        }
        let specs: Vec<MemberSpec> = alive
            .iter()
            .map(|m| MemberSpec {
                id: m.id,
                zone: m.zone.clone(),
                weight: m.weight,
            })
            .collect();
        match Layout::compute(
            &specs,
            self.config.cluster.replication,
            self.config.cluster.partitions,
            None,
        ) {
            Ok(layout) => {
                let layout = layout.with_cluster_id(ClusterId::random());
                info!(
                    members = specs.len(),
                    cluster = %layout.cluster_id().map(|c| c.to_string()).unwrap_or_default(),
                    "bootstrapping the cluster: computed layout v1"
                );
                if let Err(e) = self.install_layout(layout) {
                    warn!("storing layout v1 failed: {e}");
                }
            }
            Err(e) => warn!("computing layout v1 failed: {e}"),
        }
    }

    /// Stores and adopts a layout if it is newer than the current one. It
    /// must be this node's cluster's (a node without a cluster id adopts
    /// the layout's, stored in the same write).
    pub fn install_layout(&self, layout: Layout) -> Result<bool> {
        let mut current = self.layout.write().unwrap_or_else(|p| p.into_inner());
        if current
            .as_ref()
            .is_some_and(|c| c.version() >= layout.version())
        {
            return Ok(false);
        }
        let (layout, adopt) = self.stamp_for_install(layout)?;
        let mut batch = WriteBatch::new();
        batch.put(Cf::Meta, LAYOUT_KEY, layout.encode());
        if let Some(id) = adopt {
            batch.put(Cf::Meta, identity::CLUSTER_ID_KEY, id.to_bytes().to_vec());
        }
        self.engine.write(batch)?;
        if let Some(id) = adopt {
            self.peers.identity.set(id);
        }
        let version = layout.version();
        info!(
            version,
            members = layout.members().len(),
            replication = layout.replication(),
            cluster = %layout.cluster_id().map(|c| c.to_string()).unwrap_or_default(),
            "layout installed"
        );
        *current = Some(Arc::new(layout));
        drop(current);
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .set_layout_version(version);
        self.refresh_status();
        Ok(true)
    }

    /// Replicas per node in the current layout.
    pub fn partitions_owned(&self) -> BTreeMap<NodeId, usize> {
        self.layout()
            .map(|l| l.replica_counts())
            .unwrap_or_default()
    }
}
