//! A lock that lapses unless renewed (the S3 lock): what the holder knows about its own lease.
//! The holder trusts only its monotonic clock: the lease counts from when a renewal was *sent*,
//! less a margin, so a holder that was paused (SIGSTOP, a sleeping laptop) past its lease knows
//! it on its first look, before any renewal answer comes back.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The holder's view of its lease. Checked before every durable write and every mutating call.
#[derive(Debug)]
pub struct Lease {
    duration: Duration,
    valid_until: Mutex<Instant>,
    lost: AtomicBool,
    why: Mutex<Option<String>>,
}

/// The lease lapsed or was taken over: no further change may be made under this lock.
#[derive(Debug, Clone, thiserror::Error)]
#[error("lost the lock on the run state: {0}")]
pub struct LeaseLost(pub String);

impl Lease {
    /// A lease granted by a write sent at `sent`.
    pub fn new(duration: Duration, sent: Instant) -> Lease {
        Lease {
            duration,
            valid_until: Mutex::new(sent + Self::trusted(duration)),
            lost: AtomicBool::new(false),
            why: Mutex::new(None),
        }
    }

    /// The part of a lease the holder relies on: clocks of holder and taker may differ a little.
    fn trusted(duration: Duration) -> Duration {
        duration.mul_f64(0.8)
    }

    pub fn duration(&self) -> Duration {
        self.duration
    }

    /// A renewal sent at `sent` was accepted.
    pub fn renewed(&self, sent: Instant) {
        let mut v = self.valid_until.lock().expect("lease");
        *v = (*v).max(sent + Self::trusted(self.duration));
    }

    /// The lock is gone for good (taken over, removed, or the lease ran out).
    pub fn lose(&self, why: impl Into<String>) {
        let mut w = self.why.lock().expect("lease");
        if w.is_none() {
            *w = Some(why.into());
        }
        self.lost.store(true, Ordering::SeqCst);
    }

    pub fn is_lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }

    /// Ok while the lease is held; once it lapsed, lost for good.
    pub fn check(&self) -> Result<(), LeaseLost> {
        if !self.is_lost() && Instant::now() >= *self.valid_until.lock().expect("lease") {
            self.lose(format!(
                "its lease ({} s) ran out before it could be renewed",
                self.duration.as_secs_f64()
            ));
        }
        if self.is_lost() {
            let why = self.why.lock().expect("lease").clone().unwrap_or_default();
            return Err(LeaseLost(why));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_not_renewed_in_time_is_lost_for_good() {
        let start = Instant::now() - Duration::from_secs(10);
        let l = Lease::new(Duration::from_secs(5), start);
        assert!(l.check().is_err());
        l.renewed(Instant::now());
        assert!(l.check().is_err(), "a lost lease stays lost");
    }

    #[test]
    fn a_renewed_lease_holds() {
        let l = Lease::new(Duration::from_secs(60), Instant::now());
        assert!(l.check().is_ok());
        l.lose("taken over");
        assert_eq!(l.check().unwrap_err().0, "taken over");
    }
}
