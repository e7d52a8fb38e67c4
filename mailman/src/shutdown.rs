//! A shutdown signal every task can wait on: closing a channel wakes all its
//! receivers at once, and stays closed.

/// The waiting side; cheap to clone.
#[derive(Clone, Debug)]
pub struct Shutdown(async_channel::Receiver<()>);

/// The triggering side: dropping or calling [`Trigger::fire`] starts the shutdown.
#[derive(Debug)]
pub struct Trigger(async_channel::Sender<()>);

/// A new untriggered pair.
pub fn new() -> (Trigger, Shutdown) {
    let (tx, rx) = async_channel::bounded(1);
    (Trigger(tx), Shutdown(rx))
}

impl Trigger {
    /// Starts the shutdown.
    pub fn fire(&self) {
        self.0.close();
    }
}

impl Shutdown {
    /// Waits until the shutdown starts.
    pub async fn wait(&self) {
        // Nothing is ever sent: recv returns only when the channel closes.
        let _ = self.0.recv().await;
    }
}
