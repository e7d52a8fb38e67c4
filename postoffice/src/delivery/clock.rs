//! Time as a parameter of the delivery loop: the real clock in postoffice,
//! a hand-moved one in tests, so that scheduling is tested without sleeping.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// What the delivery loop asks of time.
pub trait Clock: Send + Sync + 'static {
    /// Milliseconds since 1970.
    fn now(&self) -> u64;

    /// Resolves once `now()` has reached `at`.
    fn sleep_until(&self, at: u64) -> Pin<Box<dyn Future<Output = ()> + Send>>;
}

/// The system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }

    fn sleep_until(&self, at: u64) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        let wait = Duration::from_millis(at.saturating_sub(self.now()));
        let deadline = Instant::now() + wait;
        Box::pin(async move {
            smol::Timer::at(deadline).await;
        })
    }
}

/// A clock that moves only when told to, for tests.
#[cfg(test)]
#[derive(Debug, Clone)]
pub struct TestClock {
    now: std::sync::Arc<std::sync::atomic::AtomicU64>,
    moved: async_channel::Sender<()>,
    listen: async_channel::Receiver<()>,
}

#[cfg(test)]
impl TestClock {
    /// A clock standing at `now`.
    pub fn at(now: u64) -> TestClock {
        let (moved, listen) = async_channel::unbounded();
        TestClock {
            now: std::sync::Arc::new(now.into()),
            moved,
            listen,
        }
    }

    /// Moves the clock to `now`, waking the one sleeper (the delivery loop).
    pub fn set(&self, now: u64) {
        self.now.store(now, std::sync::atomic::Ordering::SeqCst);
        let _ = self.moved.try_send(());
    }
}

#[cfg(test)]
impl Clock for TestClock {
    fn now(&self) -> u64 {
        self.now.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn sleep_until(&self, at: u64) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        let this = self.clone();
        Box::pin(async move {
            while this.now() < at {
                let _ = this.listen.recv().await;
            }
        })
    }
}
