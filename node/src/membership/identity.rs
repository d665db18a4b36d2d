//! Cluster identity in membership: where the cluster id is stored, when a
//! node learns it, and which gossip and layouts it lets in.
//!
//! The id lives in the `meta` column family ([`CLUSTER_ID_KEY`]) and in
//! every layout (codec format 3). A node learns it exactly once:
//!
//! * **bootstrap** draws it and stamps layout v1 with it;
//! * a **fresh node** (no layout) takes the id of the first layout it
//!   installs, whoever sent it: that is how a joiner enters a cluster;
//! * a node **from before cluster ids** (a stored layout, formats 1 or 2,
//!   and no id) takes it from a member of its own layout, by gossip or
//!   with a newer layout that member sends. If it is itself the lowest
//!   member of its layout, it draws the id, and the others take it from
//!   it. A stranger's id is refused: a node from before cluster ids that
//!   is pointed at another cluster keeps its layout too. Drawing by the
//!   lowest member, rather than deriving an id from the layout, is what
//!   keeps two old clusters apart: their layouts share nothing that would
//!   give them distinct ids, while the lowest member is one node and its
//!   random draw is unique. (Should two members ever draw, during an
//!   upgrade that also changes the layout, each side refuses the other and
//!   says so in its log; upgrade first, change the cluster after.)
//!
//! Once known, the id never changes: the node refuses gossip, layouts and
//! calls of any other cluster, so a layout alone never moves a node to
//! another cluster, and its data is never retired for one.

use std::sync::Arc;

use tracing::info;

use super::state::MemberInfo;
use super::Cluster;
use ringkv_core::error::{Error, Result};
use ringkv_core::ring::{ClusterId, Layout};
use ringkv_core::version::NodeId;
use ringkv_peer::identity::{admit, Admission, ClusterIdentity};
use ringkv_storage::{Cf, Engine, WriteBatch};

/// `meta` column family key of this node's cluster id (16 bytes).
pub(super) const CLUSTER_ID_KEY: &[u8] = b"cluster_id";

/// Loads the stored cluster id at start-up into `identity`. A data
/// directory whose stored id and stored layout disagree is refused: it
/// holds another cluster's layout, and serving it could retire data.
pub(super) fn load(
    engine: &dyn Engine,
    layout: Option<&Layout>,
    identity: &ClusterIdentity,
) -> Result<()> {
    let stored = engine
        .get(Cf::Meta, CLUSTER_ID_KEY)?
        .map(|bytes| ClusterId::from_bytes(&bytes))
        .transpose()?;
    let in_layout = layout.and_then(Layout::cluster_id);
    let id = match (stored, in_layout) {
        (Some(stored), Some(in_layout)) if stored != in_layout => {
            return Err(Error::Config(format!(
                "this data directory belongs to cluster {stored} but its stored layout to cluster {in_layout}; restore the directory or wipe it"
            )))
        }
        (Some(id), _) => id,
        (None, Some(id)) => {
            // The layout was stored, the id not yet: store it now.
            let mut batch = WriteBatch::new();
            batch.put(Cf::Meta, CLUSTER_ID_KEY, id.to_bytes().to_vec());
            engine.write(batch)?;
            id
        }
        (None, None) => return Ok(()),
    };
    identity.set(id);
    Ok(())
}

impl Cluster {
    /// This node's cluster id, once known.
    pub fn cluster_id(&self) -> Option<ClusterId> {
        self.peers.identity.get()
    }

    fn identity(&self) -> &Arc<ClusterIdentity> {
        &self.peers.identity
    }

    /// Whether `node` is a member of this node's layout or of the layout
    /// it replaces.
    fn in_my_layout(&self, node: NodeId) -> bool {
        self.layout()
            .is_some_and(|l| l.contains(node) || l.previous().is_some_and(|p| p.contains(node)))
    }

    /// Decides what to take from gossip sent (or answered) by `sender`
    /// with cluster id `theirs`, and takes it: returns the entries to
    /// apply, or an error when the message is another cluster's (counted
    /// and logged).
    pub(super) fn admit_gossip(
        &self,
        theirs: Option<ClusterId>,
        sender: Option<NodeId>,
        peer: &str,
        entries: Vec<MemberInfo>,
    ) -> Result<Vec<MemberInfo>> {
        let admission = admit(
            self.cluster_id(),
            self.layout().is_some(),
            theirs,
            sender.is_some_and(|s| self.in_my_layout(s)),
        );
        match admission {
            Admission::Accept => Ok(entries),
            Admission::Introductions => {
                // Only fresh nodes and my own layout's members: hearsay from
                // a node that does not say its cluster must not bring in
                // another cluster's members.
                Ok(entries
                    .into_iter()
                    .filter(|e| e.layout_version == 0 || self.in_my_layout(e.id))
                    .collect())
            }
            Admission::Adopt(id) => {
                self.adopt_cluster_id(id, peer)?;
                Ok(entries)
            }
            Admission::Refuse => {
                let theirs = theirs.unwrap_or(ClusterId(0));
                self.identity().refused("gossip", peer, theirs);
                Err(Error::FailedPrecondition(format!(
                    "gossip from cluster {theirs} refused: this node holds a layout of {} and never joins another cluster; check cluster.seeds",
                    self.cluster_id()
                        .map(|id| format!("cluster {id}"))
                        .unwrap_or_else(|| "its own cluster".to_string())
                )))
            }
        }
    }

    /// Checks a layout fetched from `peer` before it is installed: it must
    /// be this node's cluster's. A fresh node takes any cluster's (and
    /// adopts its id on install); a node from before cluster ids takes a
    /// stamped layout only from a member of its own layout.
    pub(super) fn admit_layout(&self, peer: NodeId, layout: &Layout) -> Result<()> {
        let theirs = layout.cluster_id();
        let allowed = match (self.cluster_id(), theirs) {
            (Some(mine), Some(theirs)) => mine == theirs,
            // An unstamped layout comes from a node from before cluster
            // ids; a node that knows its id cannot tell whose it is.
            (Some(_), None) => {
                return Err(Error::FailedPrecondition(format!(
                    "layout v{} from {peer} carries no cluster id (a node from before cluster ids); not installed until that node is upgraded",
                    layout.version()
                )))
            }
            (None, Some(_)) => self.layout().is_none() || self.in_my_layout(peer),
            (None, None) => true,
        };
        if allowed {
            return Ok(());
        }
        let theirs = theirs.unwrap_or(ClusterId(0));
        self.identity()
            .refused("a layout", &peer.to_string(), theirs);
        Err(Error::FailedPrecondition(format!(
            "layout v{} from {peer} belongs to cluster {theirs}, not this node's; not installed",
            layout.version()
        )))
    }

    /// The layout to store for `layout` and the id to adopt with it, under
    /// the layout lock: a layout of another cluster is an error (callers
    /// check fetched layouts first, so this is a last guard); a layout
    /// computed from one stored before cluster ids gets this node's id; a
    /// node without an id adopts the layout's.
    pub(super) fn stamp_for_install(&self, layout: Layout) -> Result<(Layout, Option<ClusterId>)> {
        match (self.cluster_id(), layout.cluster_id()) {
            (Some(mine), Some(theirs)) if mine != theirs => {
                Err(Error::FailedPrecondition(format!(
                    "layout v{} belongs to cluster {theirs}, this node to {mine}; not installed",
                    layout.version()
                )))
            }
            (Some(mine), None) => Ok((layout.with_cluster_id(mine), None)),
            (Some(_), Some(_)) => Ok((layout, None)),
            (None, theirs) => Ok((layout, theirs)),
        }
    }

    /// Stores `id` as this node's cluster id (it had none), and stamps the
    /// stored layout with it. `source` names who offered it, for the log.
    pub(super) fn adopt_cluster_id(&self, id: ClusterId, source: &str) -> Result<()> {
        let mut current = self.layout.write().unwrap_or_else(|p| p.into_inner());
        if let Some(mine) = self.cluster_id() {
            return if mine == id {
                Ok(())
            } else {
                Err(Error::FailedPrecondition(format!(
                    "this node belongs to cluster {mine}, not {id}"
                )))
            };
        }
        let mut batch = WriteBatch::new();
        batch.put(Cf::Meta, CLUSTER_ID_KEY, id.to_bytes().to_vec());
        let stamped = current
            .as_ref()
            .filter(|l| l.cluster_id().is_none())
            .map(|l| Arc::new((**l).clone().with_cluster_id(id)));
        if let Some(layout) = &stamped {
            batch.put(Cf::Meta, super::LAYOUT_KEY, layout.encode());
        }
        self.engine.write(batch)?;
        self.identity().set(id);
        if let Some(layout) = stamped {
            *current = Some(layout);
        }
        info!(cluster = %id, from = %source, "cluster id adopted");
        Ok(())
    }

    /// On a node from before cluster ids that is the lowest member of its
    /// settled layout: draws the cluster id, which the other members then
    /// adopt from its gossip.
    pub(super) fn maybe_draw_cluster_id(&self) {
        if self.cluster_id().is_some() {
            return;
        }
        let Some(layout) = self.layout() else { return };
        if layout.in_transition() || layout.members().iter().map(|m| m.id).min() != Some(self.me) {
            return;
        }
        let id = ClusterId::random();
        match self.adopt_cluster_id(
            id,
            "this node, the lowest member of a layout from before cluster ids",
        ) {
            Ok(()) => {
                info!(cluster = %id, "drew the cluster id for a layout from before cluster ids; the other members adopt it by gossip")
            }
            Err(e) => tracing::warn!("storing the drawn cluster id failed: {e}"),
        }
    }
}
