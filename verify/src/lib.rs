//! ringkv's verification in the manner of Jepsen: client histories,
//! checkers that read them, nemeses that break a real cluster of node
//! processes each in its own network namespace, and a campaign runner
//! that runs many seeded runs and replays any one from its seed.
//!
//! `docs/reliability.md` describes each workload, nemesis and checker and
//! records the campaigns.

pub mod campaign;
pub mod check;
pub mod cluster;
pub mod history;
pub mod nemesis;
pub mod net;
pub mod node;
pub mod run;
pub mod workload;
