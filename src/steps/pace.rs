//! How fast snapshot copies of a region pair are seen to move, to tell a quick copy from one
//! that moves bytes for long.
//!
//! The copies in flight on one region pair share its throughput (2,000 MiB/s by default, at most
//! 500 MiB/s per copy): beyond pair ÷ copy throughput copies at once, a copy that moves bytes
//! only slows the others, the longest chain first. So such copies wait for a slot of the pair
//! (`ec2:snapshot-copies-per-region-pair`). A quick copy (a small increment) is different: it
//! ends within a few polls and holds its slot mostly waiting to be seen, moving few bytes. Made
//! to wait for the pair, it would leave the pair's slots idle between the links of long chains
//! and run the many short chains last, one poll per link. So it skips the pair's slots (it still
//! takes one of the 20 copies per region).
//!
//! What is quick depends on the pace copies really go at, which AWS does not promise (500 MiB/s
//! is the most): it is learned from the progress of the full copies in flight, whose bytes are
//! known (their volume's size).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// AWS's most for one copy, until a copy was seen to go faster or slower.
const COPY_BYTES_PER_S: f64 = crate::quotas::SNAPSHOT_COPY_MIB_S * 1024.0 * 1024.0;

/// A copy expected to end within four of the shortest poll intervals (0.5 s) is quick.
pub const QUICK: Duration = Duration::from_secs(2);

#[derive(Default)]
pub struct CopyPace {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Pair scope -> the fastest pace a full copy was seen at (bytes per second).
    pace: HashMap<String, f64>,
    /// Full copies in flight: copy id -> (pair scope, bytes, submitted).
    copies: HashMap<String, (String, u64, Instant)>,
}

impl CopyPace {
    /// A full copy of `bytes` on `pair` was submitted as `id`: its progress teaches the pace.
    pub fn submitted(&self, id: &str, pair: &str, bytes: u64) {
        self.record(id, pair, bytes, Instant::now());
    }

    fn record(&self, id: &str, pair: &str, bytes: u64, at: Instant) {
        let mut i = self.inner.lock().expect("pace");
        i.copies
            .insert(id.to_string(), (pair.to_string(), bytes, at));
    }

    /// A poll saw copy `id` at `percent` (100: completed).
    pub fn seen(&self, id: &str, percent: f32) {
        self.seen_at(id, percent, Instant::now());
    }

    fn seen_at(&self, id: &str, percent: f32, at: Instant) {
        let mut i = self.inner.lock().expect("pace");
        let Some((pair, bytes, since)) = i.copies.get(id).cloned() else {
            return;
        };
        let elapsed = at.saturating_duration_since(since).as_secs_f64();
        // AWS reports whole percents: 1 % is the first sign of pace.
        if percent >= 1.0 && elapsed > 0.0 {
            let rate = f64::from(percent.min(100.0)) / 100.0 * bytes as f64 / elapsed;
            let p = i.pace.entry(pair).or_insert(0.0);
            *p = p.max(rate);
        }
        if percent >= 100.0 {
            i.copies.remove(id);
        }
    }

    /// Whether a copy of `bytes` on `pair` should end within [`QUICK`] at the pace seen.
    pub fn quick(&self, pair: &str, bytes: u64) -> bool {
        let i = self.inner.lock().expect("pace");
        let pace = i
            .pace
            .get(pair)
            .copied()
            .filter(|p| *p > 0.0)
            .unwrap_or(COPY_BYTES_PER_S);
        (bytes as f64 / pace) < QUICK.as_secs_f64()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    #[test]
    fn until_a_copy_shows_its_pace_a_copy_is_quick_at_awss_500_mib_s() {
        let p = CopyPace::default();
        assert!(p.quick("a/r1/r0", 900 * 1024 * 1024), "0.9 GiB: 1.8 s");
        assert!(!p.quick("a/r1/r0", 2 * GIB), "2 GiB: 4 s");
    }

    #[test]
    fn the_fastest_full_copy_seen_sets_the_pace_of_its_pair_only() {
        let p = CopyPace::default();
        let t0 = Instant::now();
        p.record("snap-1", "a/r1/r0", 100 * GIB, t0);
        // 10 % of 100 GiB in 1 s: 10 GiB/s, so 10 GiB is quick; 30 GiB is not.
        p.seen_at("snap-1", 10.0, t0 + Duration::from_secs(1));
        assert!(p.quick("a/r1/r0", 10 * GIB));
        assert!(!p.quick("a/r1/r0", 30 * GIB));
        // A slower sample later does not lower it (copies sharing the pair go slower).
        p.seen_at("snap-1", 12.0, t0 + Duration::from_secs(4));
        assert!(p.quick("a/r1/r0", 10 * GIB));
        // Another pair still goes at AWS's figure.
        assert!(!p.quick("a/r2/r0", 10 * GIB));
        // Completed: no longer followed; 0 % teaches nothing.
        p.seen_at("snap-1", 100.0, t0 + Duration::from_secs(9));
        p.seen_at("snap-1", 100.0, t0 + Duration::from_secs(1));
        assert!(!p.quick("a/r1/r0", 30 * GIB), "11 GiB/s, not 100");
        p.record("snap-2", "a/r2/r0", 100 * GIB, t0);
        p.seen_at("snap-2", 0.0, t0 + Duration::from_secs(1));
        assert!(!p.quick("a/r2/r0", 10 * GIB));
    }
}
