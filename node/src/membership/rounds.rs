//! Gossip rounds: exchanging member tables with a peer (as the one who asks
//! and as the one who answers), and what the exchange tells the failure
//! detector.

use super::*;

impl Cluster {
    /// Answers a peer's gossip. `theirs` is the cluster id the call carried
    /// (the transport already refused one that differs from ours) and
    /// `sender` the node it came from.
    pub fn handle_gossip(
        &self,
        req: Gossip,
        theirs: Option<ClusterId>,
        sender: Option<NodeId>,
    ) -> Result<GossipAnswer> {
        if req.cluster_name != self.config.cluster.name {
            return Err(Error::FailedPrecondition(format!(
                "gossip from cluster {:?}, but this node belongs to {:?}; check cluster.name and cluster.seeds",
                req.cluster_name, self.config.cluster.name
            )));
        }
        // A correct peer never sends more; the excess is not read.
        let excess = req.entries.len().saturating_sub(MAX_ENTRIES_PER_MESSAGE);
        let entries: Vec<MemberInfo> = req
            .entries
            .into_iter()
            .take(MAX_ENTRIES_PER_MESSAGE)
            .collect();
        let mut digests = req.digests;
        digests.truncate(MAX_DIGESTS_PER_MESSAGE);
        let peer = sender
            .map(|s| s.to_string())
            .unwrap_or_else(|| "a node without id".to_string());
        let entries = self.admit_gossip(theirs, sender, &peer, entries)?;
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (advanced, beats, refused) = apply_gossip(&mut state, entries);
        self.publish_addresses(&state, &advanced);
        self.gossip_refused(refused + excess, &peer);
        let response = if digests.is_empty() {
            GossipAnswer::default()
        } else {
            GossipAnswer {
                entries: state.deltas_for(&digests),
                wanted: state.wanted_from(&digests),
                cluster: None,
            }
        };
        drop(state);
        self.heartbeats(&beats);
        Ok(response)
    }

    /// Counts gossiped entries refused as out of bounds.
    fn gossip_refused(&self, refused: usize, peer: &str) {
        if refused > 0 {
            self.metrics.gossip_entries_refused(refused);
            debug!(%peer, refused, "refused gossiped entries out of bounds");
        }
    }

    fn heartbeats(&self, ids: &[NodeId]) {
        if ids.is_empty() {
            return;
        }
        let now = self.now_ms();
        let mut detector = self.detector.lock().unwrap_or_else(|p| p.into_inner());
        for id in ids {
            detector.heartbeat(*id, now);
        }
    }

    /// One gossip round: tick, exchange with a few peers, then adopt a
    /// newer layout or bootstrap one.
    pub async fn gossip_round(self: &Arc<Self>) {
        let (digests, me_entry, peers) = {
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            state.tick();
            let peers: Vec<(NodeId, String)> = state
                .members()
                .filter(|m| m.id != self.me && m.status != Status::Left)
                .map(|m| (m.id, m.peer_address().to_string()))
                .collect();
            (state.digests(), state.me().clone(), peers)
        };
        let fanout = self.config.gossip.fanout;
        let mut targets: Vec<(Option<NodeId>, String)> = {
            let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
            let mut chosen = peers.clone();
            chosen.shuffle(&mut *rng);
            chosen.truncate(fanout);
            chosen.into_iter().map(|(id, a)| (Some(id), a)).collect()
        };
        if peers.len() < fanout || self.layout().is_none() {
            let own = self.config.peer_advertise_address();
            let seeds = self.seeds.lock().unwrap_or_else(|p| p.into_inner()).clone();
            for seed in &seeds {
                let known = peers.iter().any(|(_, a)| a == seed);
                if *seed != own && !known {
                    targets.push((None, seed.clone()));
                }
            }
        }
        let request = Gossip {
            cluster_name: self.config.cluster.name.clone(),
            digests,
            entries: vec![me_entry],
        };
        let timeout = self.config.gossip.interval();
        let calls = targets.into_iter().map(|(id, address)| {
            let this = self.clone();
            let request = request.clone();
            async move { this.gossip_with(id, &address, request, timeout).await }
        });
        futures::future::join_all(calls).await;
        self.sync_layout().await;
        self.refresh_status();
        self.record_members();
    }

    /// Sets the members gauges from this node's current view.
    fn record_members(&self) {
        let members: Vec<_> = self
            .members()
            .into_iter()
            .filter(|m| m.info.status != Status::Left)
            .collect();
        let alive = members
            .iter()
            .filter(|m| m.liveness == Liveness::Alive)
            .count();
        self.metrics.members(members.len() as u64, alive as u64);
    }

    async fn gossip_with(
        &self,
        id: Option<NodeId>,
        address: &str,
        request: Gossip,
        timeout: Duration,
    ) {
        let to = match id {
            Some(id) => Peer::Node(id),
            None => Peer::Seed(address.to_string()),
        };
        match self.peers.gossip(to.clone(), request, timeout).await {
            Ok(answer) => {
                let excess = answer.entries.len().saturating_sub(MAX_ENTRIES_PER_MESSAGE);
                let entries: Vec<MemberInfo> = answer
                    .entries
                    .into_iter()
                    .take(MAX_ENTRIES_PER_MESSAGE)
                    .collect();
                let Ok(entries) = self.admit_gossip(answer.cluster, id, address, entries) else {
                    return;
                };
                if let Some(id) = id {
                    self.rpc_succeeded(id);
                }
                let mut wanted = answer.wanted;
                wanted.truncate(MAX_DIGESTS_PER_MESSAGE);
                let (beats, refused, push) = {
                    let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
                    let (advanced, beats, refused) = apply_gossip(&mut state, entries);
                    self.publish_addresses(&state, &advanced);
                    (beats, refused, state.entries(&wanted))
                };
                self.gossip_refused(refused + excess, address);
                self.heartbeats(&beats);
                if !push.is_empty() {
                    let follow_up = Gossip {
                        cluster_name: self.config.cluster.name.clone(),
                        digests: Vec::new(),
                        entries: push,
                    };
                    let _ = self.peers.gossip(to, follow_up, timeout).await;
                }
            }
            Err(e) => {
                if let Some(theirs) = e.cluster.filter(|t| Some(*t) != self.cluster_id()) {
                    // The peer refused us as another cluster's node.
                    self.peers
                        .identity
                        .refused("gossip answer", address, theirs);
                    return;
                }
                debug!(peer = %address, error = %e, "gossip failed");
            }
        }
    }
}

/// Applies gossiped entries to `state`. Returns the ids whose entry
/// advanced, those of them that are heartbeats, and how many entries were
/// refused.
///
/// An entry seen here for the first time is not a heartbeat: it says what
/// its node wrote at some point, not that the node runs now. A node that
/// just started learns every entry afresh, those of nodes that left or
/// died long ago included, and counting them would show such ghosts alive
/// until the detector gave up on them again; the lowest live member could
/// then even take a ghost for a wiped node back at a member's address and
/// replace that member by it (found by the verification campaign, seed
/// 1004). A node that does run advances its entry the next round.
fn apply_gossip(
    state: &mut MembershipState,
    entries: Vec<MemberInfo>,
) -> (Vec<NodeId>, Vec<NodeId>, usize) {
    let known: Vec<NodeId> = entries
        .iter()
        .filter(|e| state.get(e.id).is_some())
        .map(|e| e.id)
        .collect();
    let (advanced, refused) = state.apply_counted(entries);
    let beats = advanced
        .iter()
        .copied()
        .filter(|id| known.contains(id))
        .collect();
    (advanced, beats, refused)
}
