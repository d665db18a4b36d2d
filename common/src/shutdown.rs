//! The one shutdown signal every loop listens to.
//!
//! The server wiring holds the [`ShutdownTrigger`]; every background loop
//! and server task keeps a [`Shutdown`] and `select!`s on
//! [`Shutdown::recv`]. It lives here, below every layer, so that the layers
//! that run loops (membership, handoff, repair, rebalance, metrics,
//! workers) do not import it back from the top-level wiring.

use tokio::sync::watch;

/// Fires the shutdown signal (once; later calls do nothing).
#[derive(Clone)]
pub struct ShutdownTrigger(watch::Sender<bool>);

/// A handle each task keeps; [`Shutdown::recv`] completes once shutdown
/// has been triggered (or the trigger is gone).
#[derive(Clone)]
pub struct Shutdown(watch::Receiver<bool>);

/// A new trigger and a first handle.
pub fn channel() -> (ShutdownTrigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (ShutdownTrigger(tx), Shutdown(rx))
}

impl ShutdownTrigger {
    pub fn trigger(&self) {
        let _ = self.0.send(true);
    }

    pub fn subscribe(&self) -> Shutdown {
        Shutdown(self.0.subscribe())
    }
}

impl Shutdown {
    pub async fn recv(&mut self) {
        while !*self.0.borrow_and_update() {
            if self.0.changed().await.is_err() {
                return;
            }
        }
    }

    pub fn is_triggered(&self) -> bool {
        *self.0.borrow()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_subscriber_sees_the_trigger() {
        let (trigger, mut a) = channel();
        let mut b = trigger.subscribe();
        assert!(!a.is_triggered());
        trigger.trigger();
        a.recv().await;
        b.recv().await;
        assert!(b.is_triggered());
    }

    #[tokio::test]
    async fn a_dropped_trigger_ends_recv() {
        let (trigger, mut a) = channel();
        drop(trigger);
        a.recv().await;
        assert!(!a.is_triggered());
    }
}
