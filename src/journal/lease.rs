//! A lock that lapses unless renewed (the S3 lock): what the holder knows about its own lease.
//! The lease counts from when a renewal was *sent*, less a margin, so a holder that was paused
//! (SIGSTOP) past its lease knows it on its first look, before any renewal answer comes back.
//! It is checked by two clocks: the monotonic one (immune to clock changes) and the wall clock,
//! because the monotonic clock stands still while a laptop sleeps, and takers judge the lease
//! by the wall clock.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

/// The holder's view of its lease. Checked before every durable write and every mutating call.
#[derive(Debug)]
pub struct Lease {
    duration: Duration,
    valid_until: Mutex<(Instant, SystemTime)>,
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
            valid_until: Mutex::new(Self::until(duration, sent)),
            lost: AtomicBool::new(false),
            why: Mutex::new(None),
        }
    }

    /// When a lease sent at `sent` ends, by each clock.
    fn until(duration: Duration, sent: Instant) -> (Instant, SystemTime) {
        let trusted = Self::trusted(duration);
        let sent_wall = SystemTime::now() - sent.elapsed();
        (sent + trusted, sent_wall + trusted)
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
        let (mono, wall) = Self::until(self.duration, sent);
        *v = (v.0.max(mono), v.1.max(wall));
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
        self.check_at(Instant::now(), SystemTime::now())
    }

    fn check_at(&self, mono: Instant, wall: SystemTime) -> Result<(), LeaseLost> {
        let (until_mono, until_wall) = *self.valid_until.lock().expect("lease");
        if !self.is_lost() && (mono >= until_mono || wall >= until_wall) {
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
    fn a_lease_is_lost_when_the_wall_clock_passes_it_though_the_monotonic_one_did_not() {
        // A laptop that slept: the monotonic clock stood still, the wall clock went on.
        let l = Lease::new(Duration::from_secs(60), Instant::now());
        let later = SystemTime::now() + Duration::from_secs(3600);
        assert!(l.check_at(Instant::now(), later).is_err());
        assert!(l.check().is_err(), "lost for good");
    }

    #[test]
    fn a_renewed_lease_holds() {
        let sent = Instant::now() - Duration::from_secs(40);
        let in_20s = (
            Instant::now() + Duration::from_secs(20),
            SystemTime::now() + Duration::from_secs(20),
        );
        // Sent 40 s ago, a 60 s lease is trusted for 48 s: 20 s from now it is gone...
        let unrenewed = Lease::new(Duration::from_secs(60), sent);
        assert!(unrenewed.check_at(in_20s.0, in_20s.1).is_err());
        // ...unless it was renewed now.
        let l = Lease::new(Duration::from_secs(60), sent);
        l.renewed(Instant::now());
        assert!(l.check_at(in_20s.0, in_20s.1).is_ok());
        l.lose("taken over");
        assert_eq!(l.check().unwrap_err().0, "taken over");
    }
}
