//! `Peers` tells the failure detector of exactly the peers it could not
//! reach.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::memory::MemoryNetwork;
use super::*;

#[derive(Default)]
struct Heard(Mutex<Vec<NodeId>>);

impl Observer for Heard {
    fn unreachable(&self, node: NodeId) {
        self.0.lock().unwrap().push(node);
    }
}

const ME: NodeId = NodeId(1);
const THEM: NodeId = NodeId(2);
const T: Duration = Duration::from_millis(100);

fn peers(net: Arc<MemoryNetwork>) -> (Peers, Arc<Heard>) {
    let peers = Peers::new(
        ME,
        net,
        Arc::new(ClusterIdentity::new(Default::default())),
        Arc::default(),
    );
    let heard = Arc::new(Heard::default());
    let observer: Arc<dyn Observer> = heard.clone();
    peers.observe(Arc::downgrade(&observer));
    (peers, heard)
}

#[tokio::test(start_paused = true)]
async fn a_peer_cut_by_the_fault_switch_is_reported_unreachable() {
    let (peers, heard) = peers(MemoryNetwork::new(1));
    peers
        .faults
        .set([THEM].into_iter().collect(), Default::default());
    let err = peers
        .replicate(THEM, "k".into(), "v".into(), T)
        .await
        .unwrap_err();
    assert!(err.never_sent(), "{err}");
    assert_eq!(*heard.0.lock().unwrap(), vec![THEM]);
}

#[tokio::test(start_paused = true)]
async fn a_silent_peer_is_reported_but_a_slow_scan_is_not() {
    // Nothing is attached: every message is lost.
    let (peers, heard) = peers(MemoryNetwork::new(1));
    let err = peers.read(THEM, "k".into(), T).await.unwrap_err();
    assert_eq!(err.failure, Failure::Timeout);
    assert_eq!(*heard.0.lock().unwrap(), vec![THEM]);
    let err = peers.merkle_leaves(THEM, 0, T).await.unwrap_err();
    assert_eq!(err.failure, Failure::Timeout);
    assert_eq!(
        heard.0.lock().unwrap().len(),
        1,
        "a scan's timeout was reported"
    );
}
