//! Cross-field rules of the configuration, checked once at start-up: a
//! node refuses to start on a configuration that breaks one.

use super::*;
use ringkv_common::MAX_REPLICATION;

/// Most runtime threads a node may be given.
const MAX_WORKER_THREADS: usize = 1024;

impl Config {
    /// Checks the rules no single field's type can express.
    pub fn validate(&self) -> Result<()> {
        let fail = |msg: String| Err(Error::Config(msg));
        if self.node.worker_threads > MAX_WORKER_THREADS {
            return fail(format!(
                "node.worker_threads = {} must be at most {MAX_WORKER_THREADS} (0: one per CPU)",
                self.node.worker_threads
            ));
        }
        let c = &self.cluster;
        if !c.partitions.is_power_of_two() || !(1..=65536).contains(&c.partitions) {
            return fail(format!(
                "cluster.partitions = {} must be a power of two between 1 and 65536",
                c.partitions
            ));
        }
        if c.replication == 0 || c.replication > MAX_REPLICATION {
            return fail(format!(
                "cluster.replication = {} must be between 1 and {MAX_REPLICATION}",
                c.replication
            ));
        }
        for (name, level) in [("cluster.read", c.read), ("cluster.write", c.write)] {
            if let Level::Count(n) = level {
                if n == 0 || n > c.replication {
                    return fail(format!(
                        "{name} = {n} must be between 1 and cluster.replication = {}",
                        c.replication
                    ));
                }
            }
        }
        if c.bootstrap_expect == 0 {
            return fail("cluster.bootstrap_expect must be at least 1".to_string());
        }
        for seed in &c.seeds {
            if seed.trim().is_empty() || !seed.contains(':') {
                return fail(format!("cluster.seeds entry {seed:?} must be host:port"));
            }
        }
        // Just after a restart a node's timestamps run up to one clock lease
        // ahead of its wall clock; peers must accept that much.
        let lease = CLOCK_LEASE_MS;
        if self.clock.max_offset_ms <= 2 * lease {
            return fail(format!(
                "clock.max_offset_ms = {} must exceed {} ms (twice the clock floor's lease)",
                self.clock.max_offset_ms,
                2 * lease
            ));
        }
        if self.gossip.interval_ms == 0 || self.gossip.fanout == 0 {
            return fail("gossip.interval_ms and gossip.fanout must be at least 1".to_string());
        }
        if !self.gossip.phi_threshold.is_finite() || self.gossip.phi_threshold <= 0.0 {
            return fail("gossip.phi_threshold must be positive".to_string());
        }
        let h = &self.handoff;
        if h.replica_timeout_ms == 0 || h.interval_ms == 0 || h.batch_size == 0 || h.max_rate == 0 {
            return fail(
                "handoff.replica_timeout_ms, interval_ms, batch_size and max_rate must be at least 1"
                    .to_string(),
            );
        }
        let r = &self.repair;
        if r.interval_ms == 0 || r.keys_per_second == 0 {
            return fail(
                "repair.interval_ms and repair.keys_per_second must be at least 1".to_string(),
            );
        }
        if r.tombstone_grace_ms <= h.max_age_ms {
            return fail(format!(
                "repair.tombstone_grace_ms ({}) must exceed handoff.max_age_ms ({}): a hint older than the grace could bring deleted data back",
                r.tombstone_grace_ms, h.max_age_ms
            ));
        }
        let t = &self.transfer;
        if !t.max_rate.is_finite() || t.max_rate < 0.0 {
            return fail(format!(
                "transfer.max_rate = {} must be a number of MB/s, 0 for unlimited",
                t.max_rate
            ));
        }
        if !(1024..=MAX_CHUNK_BYTES).contains(&t.chunk_bytes) {
            return fail(format!(
                "transfer.chunk_bytes = {} must be between 1024 and {MAX_CHUNK_BYTES}",
                t.chunk_bytes
            ));
        }
        if t.concurrency == 0 || t.retry_ms == 0 {
            return fail(
                "transfer.concurrency and transfer.retry_ms must be at least 1".to_string(),
            );
        }
        if self.node.weight == 0 {
            return fail("node.weight must be at least 1".to_string());
        }
        if self.node.name.trim().is_empty() {
            return fail("node.name must not be empty".to_string());
        }
        let l = &self.limits;
        if l.max_key_bytes == 0 || l.max_key_bytes > MAX_KEY_LIMIT {
            return fail(format!(
                "limits.max_key_bytes = {} must be between 1 and {MAX_KEY_LIMIT}",
                l.max_key_bytes
            ));
        }
        if l.max_value_bytes == 0 || l.max_value_bytes > MAX_VALUE_LIMIT {
            return fail(format!(
                "limits.max_value_bytes = {} must be between 1 and {MAX_VALUE_LIMIT}",
                l.max_value_bytes
            ));
        }
        let least_state = l.max_value_bytes + KEY_STATE_HEADROOM_BYTES;
        if l.max_key_state_bytes < least_state || l.max_key_state_bytes > MAX_KEY_STATE_LIMIT {
            return fail(format!(
                "limits.max_key_state_bytes = {} must be between limits.max_value_bytes + {KEY_STATE_HEADROOM_BYTES} = {least_state} (one value of the largest size must always fit) and {MAX_KEY_STATE_LIMIT}; raise it together with max_value_bytes",
                l.max_key_state_bytes
            ));
        }
        if l.max_siblings == 0 {
            return fail("limits.max_siblings must be at least 1".to_string());
        }
        if l.request_timeout_ms == 0 {
            return fail("limits.request_timeout_ms must be at least 1".to_string());
        }
        if l.max_concurrent_requests == 0 {
            return fail("limits.max_concurrent_requests must be at least 1".to_string());
        }
        if self.storage.sync_interval_ms == 0 {
            return fail("storage.sync_interval_ms must be at least 1".to_string());
        }
        if !(1.0..=64.0).contains(&self.storage.bloom_bits_per_key) {
            return fail("storage.bloom_bits_per_key must be between 1 and 64".to_string());
        }
        let clash = |a: SocketAddr, b: SocketAddr| a == b && a.port() != 0;
        if self.metrics.enabled && clash(self.metrics.listen, self.node.listen) {
            return fail("metrics.listen must differ from node.listen".to_string());
        }
        if self.metrics.enabled && clash(self.metrics.listen, self.node.peer_listen) {
            return fail("metrics.listen must differ from node.peer_listen".to_string());
        }
        if clash(self.node.peer_listen, self.node.listen) {
            return fail(
                "node.peer_listen must differ from node.listen: the peer port serves the other nodes only"
                    .to_string(),
            );
        }
        if self.debug.inject_bug != InjectBug::None && !self.debug.fault_injection {
            return fail(format!(
                "debug.inject_bug = {:?} makes this node deliberately lose or corrupt data (for testing the verification harness's checkers); it requires debug.fault_injection = true, and must never run in production",
                self.debug.inject_bug.name()
            ));
        }
        self.validate_security()?;
        tracing_subscriber::EnvFilter::try_new(&self.log.level)
            .map_err(|e| Error::Config(format!("log.level = {:?}: {e}", self.log.level)))?;
        Ok(())
    }
}

impl Config {
    /// The `tls` and `auth` rules: files come in whole sets, and a node
    /// with auth on leaves no door open beside it.
    fn validate_security(&self) -> Result<()> {
        let fail = |msg: String| Err(Error::Config(msg));
        let t = &self.tls;
        if t.cert.is_some() != t.key.is_some() {
            return fail("tls.cert and tls.key go together: set both or neither".to_string());
        }
        if t.client_ca.is_some() && t.cert.is_none() {
            return fail(
                "tls.client_ca needs TLS on the client port: set tls.cert and tls.key".to_string(),
            );
        }
        let peer = [&t.peer_ca, &t.peer_cert, &t.peer_key];
        if peer.iter().any(|p| p.is_some()) && !peer.iter().all(|p| p.is_some()) {
            return fail(
                "tls.peer_ca, tls.peer_cert and tls.peer_key go together: the peer port needs all three for mutual TLS"
                    .to_string(),
            );
        }
        if t.peer_tls() && !is_dns_name(&self.node.name) {
            return fail(format!(
                "node.name = {:?} must be a DNS name (letters, digits, '-', '.'): with peer TLS, a node is known by the name in its certificate",
                self.node.name
            ));
        }
        let a = &self.auth;
        if !a.enabled {
            return Ok(());
        }
        if self.debug.fault_injection {
            return fail(
                "auth.enabled and debug.fault_injection exclude each other: the fault switch is for test nodes only"
                    .to_string(),
            );
        }
        if a.root_token_file.is_none() {
            return fail(
                "auth.enabled needs auth.root_token_file: the root token creates the others"
                    .to_string(),
            );
        }
        if !t.peer_tls() {
            // Even on loopback: any local process could otherwise call the
            // peer port, which takes no tokens.
            return fail(format!(
                "auth.enabled protects the client port, but node.peer_listen = {} would serve the other nodes without authentication: set tls.peer_ca, tls.peer_cert and tls.peer_key (mutual TLS)",
                self.node.peer_listen
            ));
        }
        Ok(())
    }
}

/// Whether `name` can stand in a certificate as a DNS name.
fn is_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
}
