//! A private network for one run: every node process in its own network
//! namespace, joined by veth pairs to one bridge, and partitions made with
//! iptables DROP rules inside the namespaces.
//!
//! A dropped packet is a black hole, not a refusal: the sender sees no
//! RST and no ICMP, its connection simply stops moving, and only its
//! timeouts tell it. That is what a cable pulled between racks looks like,
//! and unlike the in-process fault switch it also cuts connections already
//! open, gossip, forwards and transfers alike.
//!
//! The harness itself stays in the root namespace and reaches every node
//! through the bridge's own address: partitions cut node-to-node traffic
//! only, so clients can still observe both sides of a split.
//!
//! Everything made here is named after the run's tag (unique per process
//! and run) and removed on drop, namespaces, links and the one root
//! `FORWARD` rule a host with Docker needs (Docker sets the `FORWARD`
//! policy to DROP, and bridged traffic passes through it).

use std::collections::BTreeSet;
use std::fmt;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{bail, Context as _, Result};

/// One way a network can be split; nodes by index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Partition {
    /// No traffic between the two sides, either way.
    Halves(BTreeSet<usize>, BTreeSet<usize>),
    /// One node cut from every other.
    Isolated(usize),
    /// `to` hears nothing from `from`, while `from` still hears `to`.
    OneWay { from: usize, to: usize },
    /// Two sides that cannot reach each other, and one node (`bridge`)
    /// that reaches both: a majority for each side through it.
    Bridge {
        left: BTreeSet<usize>,
        bridge: usize,
        right: BTreeSet<usize>,
    },
}

impl Partition {
    /// Every (receiver, sender) pair whose packets are dropped at the
    /// receiver, with `outbound` drops for the symmetric cases so neither
    /// direction moves.
    fn drops(&self, nodes: usize) -> Vec<(usize, usize)> {
        let mut pairs = Vec::new();
        let mut both = |a: usize, b: usize| {
            pairs.push((a, b));
            pairs.push((b, a));
        };
        match self {
            Partition::Halves(left, right) => {
                for &a in left {
                    for &b in right {
                        both(a, b);
                    }
                }
            }
            Partition::Isolated(node) => {
                for other in (0..nodes).filter(|o| o != node) {
                    both(*node, other);
                }
            }
            Partition::OneWay { from, to } => pairs.push((*to, *from)),
            Partition::Bridge { left, right, .. } => {
                for &a in left {
                    for &b in right {
                        both(a, b);
                    }
                }
            }
        }
        pairs
    }
}

impl fmt::Display for Partition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Partition::Halves(a, b) => write!(f, "halves {a:?} | {b:?}"),
            Partition::Isolated(n) => write!(f, "node {n} isolated"),
            Partition::OneWay { from, to } => write!(f, "one way: {to} hears nothing from {from}"),
            Partition::Bridge {
                left,
                bridge,
                right,
            } => write!(f, "bridge {left:?} - {bridge} - {right:?}"),
        }
    }
}

/// Runs `program` with `args`, failing with its stderr when it fails.
pub(crate) fn run(program: &str, args: &[&str]) -> Result<()> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Distinguishes the networks of runs within one process.
static NETWORKS: AtomicU32 = AtomicU32::new(0);

/// The run's network: a bridge and one namespace per node slot.
pub struct Network {
    tag: String,
    bridge: String,
    /// 10.X.Y.0/24 of this network.
    prefix: String,
    namespaces: Vec<String>,
    forward_rule: Vec<String>,
    /// The drop rules in force, as (receiver, sender).
    dropped: BTreeSet<(usize, usize)>,
}

impl Network {
    /// Makes a network with `slots` namespaces; needs root. The subnet is
    /// chosen from the process id and a counter, so runs in parallel
    /// processes (test binaries) do not collide.
    pub fn create(slots: usize) -> Result<Network> {
        if slots == 0 || slots > 200 {
            bail!("a network holds 1 to 200 nodes, not {slots}");
        }
        let serial = NETWORKS.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let tag = format!("{:x}{serial:x}", pid % 0xfffff);
        // 10.(100 + pid % 100).(serial-derived).0/24, away from Docker's
        // 172.17/16 default and from common 10.0/16 setups.
        let prefix = format!(
            "10.{}.{}",
            100 + pid % 100,
            (pid / 100 + serial * 7) % 250 + 1
        );
        let mut net = Network {
            bridge: format!("rkb{tag}"),
            tag,
            prefix,
            namespaces: Vec::new(),
            forward_rule: Vec::new(),
            dropped: BTreeSet::new(),
        };
        net.build(slots)
            .context("making the run's network (needs root, iproute2 and iptables)")?;
        Ok(net)
    }

    fn build(&mut self, slots: usize) -> Result<()> {
        run("ip", &["link", "add", &self.bridge, "type", "bridge"])?;
        let host = format!("{}.254/24", self.prefix);
        run("ip", &["addr", "add", &host, "dev", &self.bridge])?;
        run("ip", &["link", "set", &self.bridge, "up"])?;
        let rule = vec![
            "FORWARD".to_string(),
            "-i".into(),
            self.bridge.clone(),
            "-o".into(),
            self.bridge.clone(),
            "-j".into(),
            "ACCEPT".into(),
        ];
        let mut insert = vec!["-I"];
        insert.extend(rule.iter().map(String::as_str));
        run("iptables", &insert)?;
        self.forward_rule = rule;
        for i in 0..slots {
            let ns = format!("rkn{}-{i}", self.tag);
            let outside = format!("rkh{}-{i}", self.tag);
            let inside = format!("rki{}-{i}", self.tag);
            run("ip", &["netns", "add", &ns])?;
            self.namespaces.push(ns.clone());
            run(
                "ip",
                &[
                    "link", "add", &outside, "type", "veth", "peer", "name", &inside,
                ],
            )?;
            run("ip", &["link", "set", &inside, "netns", &ns])?;
            run(
                "ip",
                &["link", "set", &outside, "master", &self.bridge, "up"],
            )?;
            let address = format!("{}/24", self.ip(i));
            self.in_ns(i, "ip", &["addr", "add", &address, "dev", &inside])?;
            self.in_ns(i, "ip", &["link", "set", &inside, "up"])?;
            self.in_ns(i, "ip", &["link", "set", "lo", "up"])?;
        }
        Ok(())
    }

    /// Runs a command inside slot `i`'s namespace.
    fn in_ns(&self, i: usize, program: &str, args: &[&str]) -> Result<()> {
        let mut all = vec!["netns", "exec", self.namespaces[i].as_str(), program];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// Slot `i`'s address.
    pub fn ip(&self, i: usize) -> String {
        format!("{}.{}", self.prefix, i + 1)
    }

    /// Slot `i`'s namespace, for `ip netns exec`.
    pub fn namespace(&self, i: usize) -> &str {
        &self.namespaces[i]
    }

    pub fn slots(&self) -> usize {
        self.namespaces.len()
    }

    /// Adds `partition`'s drops to those in force.
    pub fn partition(&mut self, partition: &Partition) -> Result<()> {
        for (receiver, sender) in partition.drops(self.slots()) {
            if self.dropped.insert((receiver, sender)) {
                let from = self.ip(sender);
                self.in_ns(
                    receiver,
                    "iptables",
                    &["-A", "INPUT", "-s", &from, "-j", "DROP"],
                )?;
            }
        }
        Ok(())
    }

    /// Removes every drop: the network is whole again.
    pub fn heal(&mut self) -> Result<()> {
        let receivers: BTreeSet<usize> = self.dropped.iter().map(|(r, _)| *r).collect();
        for receiver in receivers {
            self.in_ns(receiver, "iptables", &["-F", "INPUT"])?;
        }
        self.dropped.clear();
        Ok(())
    }

    /// Whether any drop is in force.
    pub fn is_split(&self) -> bool {
        !self.dropped.is_empty()
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        // Deleting a namespace deletes the veth end inside it, and with it
        // the peer end on the bridge.
        for ns in &self.namespaces {
            let _ = run("ip", &["netns", "del", ns]);
        }
        let _ = run("ip", &["link", "del", &self.bridge]);
        if !self.forward_rule.is_empty() {
            let mut delete = vec!["-D"];
            delete.extend(self.forward_rule.iter().map(String::as_str));
            let _ = run("iptables", &delete);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(nodes: &[usize]) -> BTreeSet<usize> {
        nodes.iter().copied().collect()
    }

    #[test]
    fn halves_drop_both_directions_across_the_split_only() {
        let drops = Partition::Halves(set(&[0, 1]), set(&[2])).drops(3);
        let drops: BTreeSet<_> = drops.into_iter().collect();
        assert_eq!(drops, set_pairs(&[(0, 2), (2, 0), (1, 2), (2, 1)]));
    }

    #[test]
    fn a_one_way_partition_drops_one_direction() {
        let drops = Partition::OneWay { from: 1, to: 3 }.drops(5);
        assert_eq!(drops, vec![(3, 1)]);
    }

    #[test]
    fn a_bridge_node_keeps_both_sides() {
        let drops = Partition::Bridge {
            left: set(&[0, 1]),
            bridge: 2,
            right: set(&[3, 4]),
        }
        .drops(5);
        assert!(drops.iter().all(|(a, b)| *a != 2 && *b != 2));
        assert_eq!(drops.len(), 8);
    }

    #[test]
    fn an_isolated_node_hears_and_reaches_nobody() {
        let drops: BTreeSet<_> = Partition::Isolated(1).drops(3).into_iter().collect();
        assert_eq!(drops, set_pairs(&[(1, 0), (0, 1), (1, 2), (2, 1)]));
    }

    fn set_pairs(pairs: &[(usize, usize)]) -> BTreeSet<(usize, usize)> {
        pairs.iter().copied().collect()
    }
}
