//! Cancellation from the caller (the CLI's Ctrl-C handler): first signal stops starting new work,
//! the second aborts at once.

use std::sync::Arc;

use tokio::sync::watch;

/// A cloneable cancellation signal that counts how often it was raised.
#[derive(Clone, Debug)]
pub struct Cancel(Arc<watch::Sender<u32>>);

impl Default for Cancel {
    fn default() -> Self {
        Cancel::new()
    }
}

impl Cancel {
    pub fn new() -> Self {
        Cancel(Arc::new(watch::Sender::new(0)))
    }
    /// Raise the signal once more (1 = interrupt gracefully, 2 = abort).
    pub fn signal(&self) {
        self.0.send_modify(|n| *n += 1);
    }
    /// How often the signal was raised.
    pub fn level(&self) -> u32 {
        *self.0.borrow()
    }
    /// Resolves once the signal has been raised at least `n` times.
    pub async fn reached(&self, n: u32) {
        let mut rx = self.0.subscribe();
        let _ = rx.wait_for(|v| *v >= n).await;
    }
}

impl Cancel {
    pub(crate) fn subscribe(&self) -> watch::Receiver<u32> {
        self.0.subscribe()
    }
}
