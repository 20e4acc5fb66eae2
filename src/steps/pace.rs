//! How fast snapshot copies of a region pair are seen to move: which copies are quick, and how
//! many copies that move bytes the pair keeps busy.
//!
//! **Quick copies.** A quick copy (a small increment, at the pace it would go beside the copies
//! in flight) ends within a few polls and holds a slot mostly waiting to be seen, moving few
//! bytes. Made to wait for the pair's slots, it would leave them idle between the links of long
//! chains and run the many short chains last, one poll per link. So it skips the pair's slots
//! (it still takes one of the 20 copies per region).
//!
//! **The pair's slots, learned.** Where the copies in flight on one region pair share its
//! throughput (AWS documents 2,000 MiB/s per pair and at most 500 MiB/s per copy for time-based
//! copies), beyond pair ÷ copy throughput copies at once a copy that moves bytes only slows the
//! others, the longest chain first, and the run ends in a tail of big copies going alone. Where
//! they do not share one (standard copies are "best effort": AWS documents no pair throughput
//! for them), holding copies back only loses time. Which world a run is in shows in the pace
//! of its full copies (whose bytes are known: their volume's size) against the number of copies
//! in flight on the pair: shared, a copy's pace falls as copies are added; not shared, it
//! stays. So a pair starts at AWS's documented ratio (2,000 / 500: 4 slots) and:
//! - until that is seen either way, a copy going at its pace (within a fifth) grows the slots
//!   to the copies in flight + 2, to see;
//! - once the pace is seen to hold as copies come and go (each copy's log-log slope of pace
//!   over copies in flight, between its samples with the fewest and the most beside it, above
//!   -0.15 over all copies), to twice the copies in flight; at most the configured
//!   `ec2:snapshot-copies-per-region-pair` (the walker keeps that bound);
//! - once it is seen to fall (that slope below -0.35), the slots are the pair's throughput (the
//!   median of pace × copies in flight where a copy went slower than one alone) over one
//!   copy's pace (seen with the fewest beside it).
//!
//! A sample is the pace of one full copy between two polls that moved it by 3 % or more (AWS
//! reports whole percents: a reported `p` % is taken as p + 0.5 %), or from its last poll to its
//! completion, beside the harmonic mean over time of the copies in flight in that while (what
//! sets a copy's share of a shared pair).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// AWS's most for one copy, until a copy was seen to go faster or slower.
const COPY_BYTES_PER_S: f64 = crate::quotas::SNAPSHOT_COPY_MIB_S * 1024.0 * 1024.0;

/// A copy expected to end within four of the shortest poll intervals (0.5 s) is quick.
pub const QUICK: Duration = Duration::from_secs(2);

/// A pair's slots before its copies showed their pace: AWS's documented pair ÷ copy throughput.
const FIRST_SLOTS: usize =
    (crate::quotas::REGION_PAIR_MIB_S / crate::quotas::SNAPSHOT_COPY_MIB_S) as usize;
/// Samples a pair's judgment rests on (the newest).
const SAMPLES: usize = 30;
/// Progress between two polls that makes a sample: 3 points (whole percents: ±17 %).
const STEP_PERCENT: f32 = 3.0;

#[derive(Default)]
pub struct CopyPace {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    pairs: HashMap<String, Pair>,
    /// Copies in flight, by copy id.
    copies: HashMap<String, Copy>,
}

impl Inner {
    /// The copies in flight on `pair` are about to change from `n`, at `at`: its copies'
    /// windows take in the time they spent beside `n`.
    fn before_change(&mut self, pair: &str, n: usize, at: Instant) {
        for c in self.copies.values_mut().filter(|c| c.pair == pair) {
            c.beside(n, at);
        }
    }
}

struct Copy {
    pair: String,
    /// A full copy's bytes (an increment's are not known: it teaches no pace).
    bytes: Option<u64>,
    /// The fraction done when last sampled, and when.
    last: (f64, Instant),
    /// Over the window since then: ∫ dt / copies in flight, up to when.
    window: (f64, Instant),
    /// Its samples with the fewest and the most copies in flight: (ln copies, ln pace).
    fewest: Option<(f64, f64)>,
    most: Option<(f64, f64)>,
}

impl Copy {
    /// Until `at` the copy went beside `n` copies in flight (itself included).
    fn beside(&mut self, n: usize, at: Instant) {
        let (sum, until) = self.window;
        let dt = at.saturating_duration_since(until).as_secs_f64();
        self.window = (sum + dt / n.max(1) as f64, at.max(until));
    }
}

struct Pair {
    in_flight: usize,
    /// The pace of one copy, as seen with the fewest copies beside it (bytes per second: the
    /// median of those samples, as whole percents make single samples coarse).
    best: f64,
    /// How each copy's pace differed between its samples with the fewest and with the most
    /// copies in flight: (copy, Δ ln copies, Δ ln pace), the newest last. Within one copy, so
    /// that copies of other sizes (which may go at other paces) do not blur it.
    spans: VecDeque<(String, f64, f64)>,
    /// (copies in flight, pace) per sample, the newest last.
    samples: VecDeque<(f64, f64)>,
    /// The fewest copies in flight a sample was taken beside, and the paces of the samples
    /// beside about as few (within 15 %), however long ago.
    fewest: (f64, VecDeque<f64>),
    /// The pair's throughput, once its copies are seen to share it (bytes per second).
    shared: Option<f64>,
    /// Seen not to share one: the pace held as copies came and went.
    own_pace: bool,
    slots: usize,
}

impl Default for Pair {
    fn default() -> Self {
        Pair {
            in_flight: 0,
            best: 0.0,
            spans: VecDeque::new(),
            samples: VecDeque::new(),
            fewest: (f64::MAX, VecDeque::new()),
            shared: None,
            own_pace: false,
            slots: FIRST_SLOTS,
        }
    }
}

/// The middle of the values (the upper one of two; 0 if none).
fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.collect();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn push<T>(q: &mut VecDeque<T>, v: T) {
    q.push_back(v);
    if q.len() > SAMPLES {
        q.pop_front();
    }
}

impl Pair {
    /// Copy `id` went at `pace` beside `n` copies in flight (over the window of the sample).
    fn learn(&mut self, id: &str, copy: &mut Copy, n: f64, pace: f64) {
        if pace <= 0.0 || n <= 0.0 {
            return;
        }
        let now = (n.ln(), pace.ln());
        if copy.fewest.is_none_or(|f| now.0 < f.0) {
            copy.fewest = Some(now);
        }
        if copy.most.is_none_or(|m| now.0 > m.0) {
            copy.most = Some(now);
        }
        if let (Some(f), Some(m)) = (copy.fewest, copy.most) {
            self.spans.retain(|s| s.0 != id);
            push(&mut self.spans, (id.to_string(), m.0 - f.0, m.1 - f.1));
        }
        push(&mut self.samples, (n, pace));
        if n * 1.15 < self.fewest.0 {
            self.fewest = (n, VecDeque::new());
        }
        if n <= self.fewest.0 * 1.15 {
            push(&mut self.fewest.1, pace);
        }
        self.best = median(self.fewest.1.iter().copied());
        let slope = self.slope();
        // The pair's throughput: pace × copies where the copies went slower than one alone
        // (the pair was full then), the most seen if none did.
        let total = || {
            let full = self.samples.iter().filter(|s| s.1 < 0.85 * self.best);
            let most = self.samples.iter().map(|(n, p)| n * p).fold(0.0, f64::max);
            Some(median(full.map(|(n, p)| n * p)))
                .filter(|t| *t > 0.0)
                .unwrap_or(most)
        };
        match slope {
            Some(s) if s < -0.35 => (self.shared, self.own_pace) = (Some(total()), false),
            Some(s) if s > -0.15 => (self.shared, self.own_pace) = (None, true),
            Some(_) if self.shared.is_some() => self.shared = Some(total()),
            _ => {}
        }
        let n = n.round() as usize;
        if let Some(pair) = self.shared {
            self.slots = ((pair / self.best - 0.2).ceil() as usize).max(1);
        } else if self.own_pace {
            // seen: the pace holds as copies come and go
            self.slots = self.slots.max(2 * n);
        } else if pace >= 0.8 * self.best {
            // not seen yet either way: two more, to see
            self.slots = self.slots.max(n + 2);
        }
    }

    /// How pace follows the copies in flight: the least-squares slope (through 0) of each
    /// copy's Δ ln pace over its Δ ln copies, of the copies seen beside 1.5× as many copies as
    /// at their fewest, once they span as much as two such copies (or one beside 1.8×).
    fn slope(&self) -> Option<f64> {
        let spread = 1.5f64.ln();
        let spans = || self.spans.iter().filter(|s| s.1 >= spread);
        let sxx: f64 = spans().map(|s| s.1 * s.1).sum();
        if sxx < 2.0 * spread * spread {
            return None;
        }
        Some(spans().map(|s| s.1 * s.2).sum::<f64>() / sxx)
    }
}

impl CopyPace {
    /// A copy on `pair` was submitted as `id`; a full copy's `bytes` are known.
    pub fn submitted(&self, id: &str, pair: &str, bytes: Option<u64>) {
        self.record(id, pair, bytes, Instant::now());
    }

    fn record(&self, id: &str, pair: &str, bytes: Option<u64>, at: Instant) {
        let mut i = self.inner.lock().expect("pace");
        if i.copies.contains_key(id) {
            return;
        }
        let n = i.pairs.entry(pair.to_string()).or_default().in_flight;
        i.before_change(pair, n, at);
        i.pairs.entry(pair.to_string()).or_default().in_flight += 1;
        let copy = Copy {
            pair: pair.to_string(),
            bytes,
            last: (0.0, at),
            window: (0.0, at),
            fewest: None,
            most: None,
        };
        i.copies.insert(id.to_string(), copy);
    }

    /// A poll saw copy `id` at `percent` (100: completed).
    pub fn seen(&self, id: &str, percent: f32) {
        self.seen_at(id, percent, Instant::now());
    }

    fn seen_at(&self, id: &str, percent: f32, at: Instant) {
        let mut guard = self.inner.lock().expect("pace");
        let i = &mut *guard;
        let Some(copy) = i.copies.get_mut(id) else {
            return;
        };
        let pair = i.pairs.entry(copy.pair.clone()).or_default();
        let (was, since) = copy.last;
        let moved_on =
            percent >= 100.0 || f64::from(percent) >= was * 100.0 + f64::from(STEP_PERCENT);
        if let Some(bytes) = copy.bytes.filter(|_| moved_on) {
            let now = if percent >= 100.0 {
                1.0
            } else {
                f64::from(percent + 0.5) / 100.0
            };
            let elapsed = at.saturating_duration_since(since).as_secs_f64();
            copy.beside(pair.in_flight, at);
            if elapsed > 0.0 && now > was && copy.window.0 > 0.0 {
                // The copies in flight over the window, as they set a copy's share of the
                // pair: their harmonic mean over time (a wave of quick copies starts at once).
                let n = elapsed / copy.window.0;
                let pace = (now - was) * bytes as f64 / elapsed;
                pair.learn(id, copy, n, pace);
            }
            copy.last = (now, at);
            copy.window = (0.0, at);
        }
        if percent >= 100.0 {
            self.end(i, id, at);
        }
    }

    /// Copy `id` is no longer in flight (failed, gone or completed).
    pub fn ended(&self, id: &str) {
        self.ended_at(id, Instant::now());
    }

    fn ended_at(&self, id: &str, at: Instant) {
        let mut i = self.inner.lock().expect("pace");
        self.end(&mut i, id, at);
    }

    fn end(&self, i: &mut Inner, id: &str, at: Instant) {
        let Some(copy) = i.copies.remove(id) else {
            return;
        };
        let n = i.pairs.get(&copy.pair).map_or(0, |p| p.in_flight);
        i.before_change(&copy.pair, n, at);
        if let Some(p) = i.pairs.get_mut(&copy.pair) {
            p.in_flight = p.in_flight.saturating_sub(1);
        }
    }

    /// Whether a copy of `bytes` on `pair` should end within [`QUICK`] at the pace it would go
    /// now, beside the copies in flight: a copy's own pace where copies are seen not to share
    /// the pair, else its share of the pair's throughput (as seen, or until it is seen, as AWS
    /// documents it: 4 copies' worth).
    pub fn quick(&self, pair: &str, bytes: u64) -> bool {
        let i = self.inner.lock().expect("pace");
        let pace = i
            .pairs
            .get(pair)
            .filter(|p| p.best > 0.0)
            .map_or(COPY_BYTES_PER_S, |p| {
                let share = |total: f64| p.best.min(total / (p.in_flight + 1) as f64);
                match p.shared {
                    Some(total) => share(total),
                    None if p.own_pace => p.best,
                    None => share(p.best * FIRST_SLOTS as f64),
                }
            });
        (bytes as f64 / pace) < QUICK.as_secs_f64()
    }

    /// The copies that move bytes `pair` keeps busy, as learned so far.
    pub fn slots(&self, pair: &str) -> usize {
        let i = self.inner.lock().expect("pace");
        i.pairs.get(pair).map_or(FIRST_SLOTS, |p| p.slots)
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
        assert_eq!(p.slots("a/r1/r0"), 4, "AWS's 2,000 / 500 MiB/s");
    }

    #[test]
    fn the_pace_of_a_full_copy_with_the_fewest_beside_it_sets_its_pairs_only() {
        let p = CopyPace::default();
        let t0 = Instant::now();
        p.record("snap-1", "a/r1/r0", Some(100 * GIB), t0);
        // 9.5 % (reported 9 %) of 100 GiB in 1 s: 9.5 GiB/s, so 10 GiB is quick; 30 GiB is not.
        p.seen_at("snap-1", 9.0, t0 + Duration::from_secs(1));
        assert!(p.quick("a/r1/r0", 10 * GIB));
        assert!(!p.quick("a/r1/r0", 30 * GIB));
        // A slower sample with another copy beside it does not lower it (copies sharing the
        // pair go slower).
        p.record("snap-9", "a/r1/r0", None, t0 + Duration::from_secs(1));
        p.seen_at("snap-1", 12.0, t0 + Duration::from_secs(4));
        assert!(p.quick("a/r1/r0", 10 * GIB));
        // Another pair still goes at AWS's figure.
        assert!(!p.quick("a/r2/r0", 10 * GIB));
        // Completed: no longer followed; 0 % teaches nothing; an increment teaches nothing.
        p.seen_at("snap-1", 100.0, t0 + Duration::from_secs(40));
        p.seen_at("snap-1", 100.0, t0 + Duration::from_secs(1));
        assert!(!p.quick("a/r1/r0", 30 * GIB), "about 10 GiB/s, not 100");
        p.record("snap-2", "a/r2/r0", Some(100 * GIB), t0);
        p.seen_at("snap-2", 0.0, t0 + Duration::from_secs(1));
        p.record("snap-3", "a/r2/r0", None, t0);
        p.seen_at("snap-3", 100.0, t0 + Duration::from_millis(10));
        assert!(!p.quick("a/r2/r0", 10 * GIB));
    }

    /// Copies of 1,000 GiB on one pair, each polled every second while `n(t)` copies are in
    /// flight, copy k going at `pace(k, n)` GiB/s; what was learned after `seconds`.
    fn world(
        pace: impl Fn(usize, usize) -> f64,
        n: impl Fn(u64) -> usize,
        seconds: u64,
    ) -> CopyPace {
        let p = CopyPace::default();
        let t0 = Instant::now();
        let gib = 1000.0;
        let mut done: HashMap<usize, f64> = HashMap::new();
        for s in 0..seconds {
            let at = t0 + Duration::from_secs(s);
            let want = n(s);
            // copies 0..want in flight: the first ones stay, the others come and go
            for k in 0..want {
                if let std::collections::hash_map::Entry::Vacant(e) = done.entry(k) {
                    p.record(
                        &format!("snap-{k}"),
                        "pair",
                        Some((gib * GIB as f64) as u64),
                        at,
                    );
                    e.insert(0.0);
                }
            }
            done.retain(|&k, _| {
                if k >= want {
                    p.ended_at(&format!("snap-{k}"), at);
                }
                k < want
            });
            for k in 0..want {
                let f = done.get_mut(&k).unwrap();
                *f += pace(k, want) / gib;
                let percent = (*f * 100.0).floor() as f32;
                p.seen_at(
                    &format!("snap-{k}"),
                    percent,
                    at + Duration::from_millis(999),
                );
            }
        }
        p
    }

    #[test]
    fn copies_that_share_the_pairs_throughput_get_as_many_slots_as_keep_it_busy() {
        // 40 GiB/s for the pair, at most 10 per copy: 4 slots, while 4 to 16 copies come and go.
        let shared = |_, n: usize| (40.0 / n as f64).min(10.0);
        let copies = |s: u64| [4, 8, 16, 8, 6, 12][(s / 10 % 6) as usize];
        let learned = world(shared, copies, 120);
        assert_eq!(learned.slots("pair"), 4);
        // Beside the 12 in flight at the end a copy goes at 40 / 13 GiB/s: 15 GiB is not quick
        // (it would be at a copy's own 10 GiB/s), 5 GiB is.
        assert!(!learned.quick("pair", 15 * GIB));
        assert!(learned.quick("pair", 5 * GIB));
        // 80 per pair: 8.
        let wider = |_, n: usize| (80.0 / n as f64).min(10.0);
        assert_eq!(world(wider, copies, 120).slots("pair"), 8);
    }

    #[test]
    fn copies_that_go_at_their_own_pace_get_more_slots_as_they_are_seen_to() {
        // Each copy at 10 GiB/s, however many run: every slot the configured limit allows.
        let own = |_, _| 10.0;
        let copies = |s: u64| [4, 8, 16, 8, 6, 12][(s / 10 % 6) as usize];
        assert!(world(own, copies, 120).slots("pair") >= 18, "not held back");
        // Copies of other sizes each done in a fixed time: paces of 2 to 30 GiB/s, unrelated
        // to the copies in flight.
        let by_size = |k: usize, _| 2.0 + (k * 7 % 15) as f64 * 2.0;
        assert!(
            world(by_size, copies, 120).slots("pair") >= 18,
            "not taken for shared"
        );
        // From 4 copies, growing as the slots allow.
        let p = CopyPace::default();
        let t0 = Instant::now();
        for k in 0..4 {
            p.record(&format!("s{k}"), "pair", Some(100 * GIB), t0);
        }
        for k in 0..4 {
            p.seen_at(&format!("s{k}"), 4.0, t0 + Duration::from_secs(2));
        }
        assert_eq!(p.slots("pair"), 6, "4 in flight + 2");
    }
}
