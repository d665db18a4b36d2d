//! Membership's pure parts: the gossiped member table and the failure
//! detector. The node's `membership` module runs them (gossip rounds,
//! layout persistence, joins and leaves).

pub mod detector;
pub mod state;
