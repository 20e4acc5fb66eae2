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
//!   to the copies in flight + 2, to see: from its second sample on (the quick copies that
//!   start beside the first ones often show it sooner; a copy that moves bytes, once started,
//!   slows the others to its end), and not where more copies beside were seen going slower;
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
//! sets a copy's share of a shared pair). A copy counts as in flight from its submission to
//! about when it ended: a poll sees it completed up to a poll interval later (a quick copy may
//! have moved its bytes in a tenth of that), so its end is put where the bytes it had left at
//! its last sight would have taken at its pace, and the copies beside it are counted again.
//! Counted until seen, 8 quick copies a poll beside 4 copies that share the pair would make it
//! look 2.5 times as wide as it is.

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

/// What a copy will move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopyBytes {
    pub bytes: u64,
    /// A full copy's bytes are its volume's size; an increment's are an estimate (it teaches no
    /// pace, but tells about when it ended).
    pub exact: bool,
}

struct Copy {
    pair: String,
    bytes: CopyBytes,
    /// The fraction done when its sample window began (its last sample or its submission).
    last: (f64, Instant),
    /// The fraction a poll last saw it at, still pending, and when (its submission at first).
    seen: (f64, Instant),
    /// Its last sample's pace.
    pace: Option<f64>,
    /// Its samples with the fewest and the most copies in flight: (ln copies, ln pace).
    fewest: Option<(f64, f64)>,
    most: Option<(f64, f64)>,
}

struct Pair {
    /// The copies in flight from each instant on (until the next entry), oldest first, back
    /// to the oldest instant a copy's sample window or end could still go back to. A copy's
    /// end is put where it is estimated to have ended, not where a poll saw it: a copy counts
    /// beside the others only while it moves bytes.
    crowd: VecDeque<(Instant, usize)>,
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
            crowd: VecDeque::new(),
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
    quantile(values, 0.5)
}

/// The value a fraction `q` of the way up the sorted values (0 if none).
fn quantile(values: impl Iterator<Item = f64>, q: f64) -> f64 {
    let mut v: Vec<f64> = values.collect();
    v.sort_by(f64::total_cmp);
    let i = (v.len() as f64 * q) as usize;
    v.get(i.min(v.len().saturating_sub(1)))
        .copied()
        .unwrap_or(0.0)
}

fn push<T>(q: &mut VecDeque<T>, v: T) {
    q.push_back(v);
    if q.len() > SAMPLES {
        q.pop_front();
    }
}

impl Pair {
    /// The copies in flight now.
    fn in_flight(&self) -> usize {
        self.crowd.back().map_or(0, |c| c.1)
    }

    /// From `at` on, one copy more (or one fewer) is in flight. `at` may be in the past: a
    /// copy's end is known a poll after it.
    fn change(&mut self, at: Instant, more: bool) {
        let step = |n: usize| if more { n + 1 } else { n.saturating_sub(1) };
        let i = self.crowd.partition_point(|c| c.0 <= at);
        for c in self.crowd.iter_mut().skip(i) {
            c.1 = step(c.1);
        }
        match i.checked_sub(1).map(|k| &mut self.crowd[k]) {
            Some(c) if c.0 == at => c.1 = step(c.1),
            before => {
                let n = step(before.map_or(0, |c| c.1));
                self.crowd.insert(i, (at, n));
            }
        }
    }

    /// The copies in flight from `from` to `to` as they set a copy's share of the pair: their
    /// harmonic mean over time (a wave of quick copies starts at once).
    fn crowd_over(&self, from: Instant, to: Instant) -> Option<f64> {
        let mut sum = 0.0;
        for (k, &(t, n)) in self.crowd.iter().enumerate() {
            let until = self.crowd.get(k + 1).map_or(to, |c| c.0.min(to));
            let dt = until.saturating_duration_since(t.max(from)).as_secs_f64();
            if n > 0 {
                sum += dt / n as f64;
            }
        }
        let dt = to.saturating_duration_since(from).as_secs_f64();
        (sum > 0.0 && dt > 0.0).then(|| dt / sum)
    }

    /// Forget how many were in flight before `floor` (the oldest instant a copy of the pair
    /// may still look back to).
    fn forget_before(&mut self, floor: Instant) {
        while self.crowd.len() > 1 && self.crowd[1].0 <= floor {
            self.crowd.pop_front();
        }
    }

    /// The pace a copy would go at beside the copies in flight (itself among them if
    /// `counted`): a copy's own pace where copies are seen not to share the pair, else its
    /// share of the pair's throughput (as seen, or until it is seen, as AWS documents it: 4
    /// copies' worth). AWS's most for one copy until a copy showed its pace.
    fn pace_beside(&self, counted: bool) -> f64 {
        if self.best <= 0.0 {
            return COPY_BYTES_PER_S;
        }
        let n = (self.in_flight() + usize::from(!counted)).max(1) as f64;
        let share = |total: f64| self.best.min(total / n);
        match self.shared {
            Some(total) => share(total),
            None if self.own_pace => self.best,
            None => share(self.best * FIRST_SLOTS as f64),
        }
    }

    /// Copy `id` went at `pace` beside `n` copies in flight (over the window of the sample).
    fn learn(&mut self, id: &str, copy: &mut Copy, n: f64, pace: f64) {
        if pace <= 0.0 || n <= 0.0 {
            return;
        }
        let now = (n.ln(), pace.ln());
        let again = copy.fewest.is_some();
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
        // More copies seen beside than now, going slower: the pair was already seen with more.
        let slower_beside_more = self
            .samples
            .iter()
            .any(|&(m, p)| m >= n + 1.0 && p < 0.8 * self.best);
        push(&mut self.samples, (n, pace));
        // Beside fewer copies than ever, a copy goes as fast as one did before or faster; one
        // that went slower was counted beside too few (an end estimated too early): not a new
        // fewest.
        if n * 1.15 < self.fewest.0 && pace >= 0.85 * self.best {
            self.fewest = (n, VecDeque::new());
        }
        if n <= self.fewest.0 * 1.15 && n * 1.15 >= self.fewest.0 {
            push(&mut self.fewest.1, pace);
        }
        self.best = median(self.fewest.1.iter().copied());
        let slope = self.slope();
        // The pair's throughput: pace × copies where the copies went slower than one alone
        // (the pair was full then), the most seen if none did. The lower quartile, not the
        // median: a copy whose end is estimated too late counts beside the others too long
        // (an increment's bytes are an estimate), so counted copies tend to be too many, and
        // the samples that count no more than share the pair are the low ones.
        let total = || {
            let full = self.samples.iter().filter(|s| s.1 < 0.85 * self.best);
            let most = self.samples.iter().map(|(n, p)| n * p).fold(0.0, f64::max);
            Some(quantile(full.map(|(n, p)| n * p), 0.25))
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
        } else if again && pace >= 0.8 * self.best && !slower_beside_more {
            // not seen yet either way: two more, to see. Not at a copy's first sample (the
            // quick copies that start beside the first ones may show it sooner, and a copy
            // that moves bytes, once started, slows the others to its end) nor where more
            // copies beside were seen to go slower.
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
    /// A copy on `pair` was submitted as `id`.
    pub fn submitted(&self, id: &str, pair: &str, bytes: CopyBytes) {
        self.record(id, pair, bytes, Instant::now());
    }

    fn record(&self, id: &str, pair: &str, bytes: CopyBytes, at: Instant) {
        let mut i = self.inner.lock().expect("pace");
        if i.copies.contains_key(id) {
            return;
        }
        i.pairs
            .entry(pair.to_string())
            .or_default()
            .change(at, true);
        let copy = Copy {
            pair: pair.to_string(),
            bytes,
            last: (0.0, at),
            seen: (0.0, at),
            pace: None,
            fewest: None,
            most: None,
        };
        i.copies.insert(id.to_string(), copy);
    }

    /// A poll saw these copies at these percents (100: completed). The completed ones first:
    /// where they ended tells how many the others went beside.
    pub fn polled(&self, seen: &[(String, f32)]) {
        self.polled_at(seen, Instant::now());
    }

    fn polled_at(&self, seen: &[(String, f32)], at: Instant) {
        let mut guard = self.inner.lock().expect("pace");
        let i = &mut *guard;
        for (id, _) in seen.iter().filter(|s| s.1 >= 100.0) {
            Self::completed(i, id, at);
        }
        for (id, percent) in seen.iter().filter(|s| s.1 < 100.0) {
            Self::progressed(i, id, *percent, at);
        }
        Self::forget(i, at);
    }

    /// A poll at `at` saw copy `id` completed: it ended after it was last seen pending, about
    /// when the bytes it had left would have taken at its pace (where no copy has shown its
    /// pace yet: halfway).
    fn completed(i: &mut Inner, id: &str, at: Instant) {
        let Some(copy) = i.copies.remove(id) else {
            return;
        };
        let pair = i.pairs.entry(copy.pair.clone()).or_default();
        let (done, seen) = copy.seen;
        let left = (1.0 - done).max(0.0) * copy.bytes.bytes as f64;
        let pace = copy.pace.unwrap_or_else(|| pair.pace_beside(true));
        let end = if pair.best > 0.0 && pace > 0.0 {
            seen + Duration::from_secs_f64((left / pace).min(3600.0))
        } else {
            seen + at.saturating_duration_since(seen) / 2
        };
        let end = end.clamp(seen, at);
        pair.change(end, false);
        // Its last sample runs to that estimate; taken only where most of it was seen.
        let (was, since) = copy.last;
        let observed = seen.saturating_duration_since(since);
        if copy.bytes.exact && observed >= end.saturating_duration_since(seen) {
            let elapsed = end.saturating_duration_since(since).as_secs_f64();
            if let Some(n) = pair.crowd_over(since, end).filter(|_| elapsed > 0.0) {
                let mut copy = copy;
                let pace = (1.0 - was) * copy.bytes.bytes as f64 / elapsed;
                pair.learn(id, &mut copy, n, pace);
            }
        }
    }

    /// A poll at `at` saw copy `id` pending at `percent`: a sample, if it moved on enough.
    fn progressed(i: &mut Inner, id: &str, percent: f32, at: Instant) {
        let Some(copy) = i.copies.get_mut(id) else {
            return;
        };
        let pair = i.pairs.entry(copy.pair.clone()).or_default();
        // AWS reports whole percents: a reported p % is taken as p + 0.5 %.
        let now = f64::from(percent + 0.5) / 100.0;
        copy.seen = (now, at);
        let (was, since) = copy.last;
        if !copy.bytes.exact || f64::from(percent) < was * 100.0 + f64::from(STEP_PERCENT) {
            return;
        }
        let elapsed = at.saturating_duration_since(since).as_secs_f64();
        if let Some(n) = pair.crowd_over(since, at).filter(|_| elapsed > 0.0) {
            let pace = (now - was) * copy.bytes.bytes as f64 / elapsed;
            pair.learn(id, copy, n, pace);
            copy.pace = Some(pace);
        }
        copy.last = (now, at);
    }

    /// Each pair forgets how many were in flight before its copies' oldest sample window (a
    /// pair with none in flight, before the poll at `at`).
    fn forget(i: &mut Inner, at: Instant) {
        let mut floor: HashMap<&str, Instant> = HashMap::new();
        for c in i.copies.values() {
            let f = floor.entry(c.pair.as_str()).or_insert(c.last.1);
            *f = (*f).min(c.last.1);
        }
        for (name, pair) in &mut i.pairs {
            match floor.get(name.as_str()) {
                Some(f) => pair.forget_before(*f),
                None => pair.forget_before(at),
            }
        }
    }

    /// Copy `id` is no longer in flight (failed or gone), as of now.
    pub fn ended(&self, id: &str) {
        self.ended_at(id, Instant::now());
    }

    fn ended_at(&self, id: &str, at: Instant) {
        let mut i = self.inner.lock().expect("pace");
        if let Some(copy) = i.copies.remove(id) {
            i.pairs.entry(copy.pair).or_default().change(at, false);
        }
    }

    /// Whether a copy of `bytes` on `pair` should end within [`QUICK`] at the pace it would go
    /// now, beside the copies in flight.
    pub fn quick(&self, pair: &str, bytes: u64) -> bool {
        let i = self.inner.lock().expect("pace");
        let pace = i
            .pairs
            .get(pair)
            .map_or(COPY_BYTES_PER_S, |p| p.pace_beside(false));
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

    fn full(bytes: u64) -> CopyBytes {
        CopyBytes { bytes, exact: true }
    }

    fn increment(bytes: u64) -> CopyBytes {
        CopyBytes {
            bytes,
            exact: false,
        }
    }

    fn seen(id: &str, percent: f32) -> Vec<(String, f32)> {
        vec![(id.to_string(), percent)]
    }

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
        p.record("snap-1", "a/r1/r0", full(100 * GIB), t0);
        // 9.5 % (reported 9 %) of 100 GiB in 1 s: 9.5 GiB/s, so 10 GiB is quick; 30 GiB is not.
        p.polled_at(&seen("snap-1", 9.0), t0 + Duration::from_secs(1));
        assert!(p.quick("a/r1/r0", 10 * GIB));
        assert!(!p.quick("a/r1/r0", 30 * GIB));
        // A slower sample with another copy beside it does not lower it (copies sharing the
        // pair go slower).
        p.record(
            "snap-9",
            "a/r1/r0",
            increment(GIB),
            t0 + Duration::from_secs(1),
        );
        p.polled_at(&seen("snap-1", 13.0), t0 + Duration::from_secs(4));
        let best = p.inner.lock().unwrap().pairs["a/r1/r0"].best;
        assert!((best / GIB as f64 - 9.5).abs() < 1e-9, "9.5 GiB/s: {best}");
        // Another pair still goes at AWS's figure.
        assert!(!p.quick("a/r2/r0", 10 * GIB));
        // Completed: no longer followed; 0 % teaches nothing; an increment teaches nothing.
        p.polled_at(&seen("snap-1", 100.0), t0 + Duration::from_secs(40));
        p.polled_at(&seen("snap-1", 100.0), t0 + Duration::from_secs(1));
        assert!(!p.quick("a/r1/r0", 30 * GIB), "about 10 GiB/s, not 100");
        p.record("snap-2", "a/r2/r0", full(100 * GIB), t0);
        p.polled_at(&seen("snap-2", 0.0), t0 + Duration::from_secs(1));
        p.record("snap-3", "a/r2/r0", increment(GIB), t0);
        p.polled_at(&seen("snap-3", 100.0), t0 + Duration::from_millis(10));
        assert!(!p.quick("a/r2/r0", 10 * GIB));
    }

    #[test]
    fn no_more_slots_to_see_where_more_copies_beside_were_seen_to_go_slower() {
        let p = CopyPace::default();
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let big: Vec<String> = (0..4).map(|k| format!("big{k}")).collect();
        for id in &big {
            p.record(id, "pair", full(1000 * GIB), t0);
        }
        // 20 GiB/s each, beside 4
        let polled: Vec<_> = big.iter().map(|id| (id.clone(), 3.5)).collect();
        p.polled_at(&polled, at(2));
        // 12 more for a second, at 3.5 GiB/s each beside 16
        for k in 0..12 {
            p.record(&format!("o{k}"), "pair", full(100 * GIB), at(2));
        }
        let polled: Vec<_> = (0..12).map(|k| (format!("o{k}"), 3.0)).collect();
        p.polled_at(&polled, at(3));
        for k in 0..12 {
            p.ended_at(&format!("o{k}"), at(3));
        }
        // the first 4 at 17.5 GiB/s beside about 5 (not enough spread to tell a slope): the
        // pair was seen with more, going slower, so there is nothing to see by adding 2
        let polled: Vec<_> = big.iter().map(|id| (id.clone(), 10.5)).collect();
        p.polled_at(&polled, at(6));
        assert_eq!(p.slots("pair"), 4);
    }

    #[test]
    fn a_copy_beside_fewer_than_ever_but_slower_does_not_lower_one_copys_pace() {
        let p = CopyPace::default();
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        for k in 0..4 {
            p.record(&format!("s{k}"), "pair", full(100 * GIB), t0);
        }
        // 4 at 10 GiB/s each
        let polled: Vec<_> = (0..4).map(|k| (format!("s{k}"), 9.5)).collect();
        p.polled_at(&polled, at(1));
        // one fails; the other three go at 5 GiB/s (counted beside 3, they must have been
        // beside more): not taken for one copy's pace
        p.ended_at("s3", at(1));
        let polled: Vec<_> = (0..3).map(|k| (format!("s{k}"), 19.5)).collect();
        p.polled_at(&polled, at(3));
        let best = p.inner.lock().unwrap().pairs["pair"].best;
        assert!((best / GIB as f64 - 10.0).abs() < 1e-9, "{best}");
        // three at 12 GiB/s: one copy goes that fast
        let polled: Vec<_> = (0..3).map(|k| (format!("s{k}"), 43.5)).collect();
        p.polled_at(&polled, at(5));
        let best = p.inner.lock().unwrap().pairs["pair"].best;
        assert!((best / GIB as f64 - 12.0).abs() < 1e-9, "{best}");
    }

    #[test]
    fn a_copy_seen_completed_counts_beside_the_others_until_about_when_it_ended() {
        let p = CopyPace::default();
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        p.record("big", "pair", full(100 * GIB), t0);
        // 10 GiB/s alone
        p.polled_at(&seen("big", 9.5), at(1000));
        // a 1 GiB increment submitted at 1 s is seen completed at the 2 s poll: at 10 GiB/s it
        // ended at about 1.1 s, so the big copy went beside 2 copies for 0.1 s of that second
        // and alone for 0.9 s (not beside 2 for the whole second)
        p.record("small", "pair", increment(GIB), at(1000));
        p.polled_at(&[("small".into(), 100.0), ("big".into(), 19.0)], at(2000));
        let i = p.inner.lock().unwrap();
        let pair = &i.pairs["pair"];
        let (n, _) = *pair.samples.back().unwrap();
        assert!((n - 1.0 / (0.1 / 2.0 + 0.9)).abs() < 0.01, "{n}");
        assert_eq!(pair.in_flight(), 1);
        // what came before the big copy's new sample window is forgotten
        assert_eq!(pair.crowd.len(), 1, "{:?}", pair.crowd);
    }

    /// Copies of 1,000 GiB on one pair, each polled every second while `n(t)` copies are in
    /// flight, copy k going at `pace(k, n)` GiB/s; what was learned after `seconds`.
    fn world(
        pace: impl Fn(usize, usize) -> f64,
        n: impl Fn(u64) -> usize,
        quick: usize,
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
                    p.record(&format!("snap-{k}"), "pair", full(1000 * GIB), at);
                    e.insert(0.0);
                }
            }
            done.retain(|&k, _| {
                if k >= want {
                    p.ended_at(&format!("snap-{k}"), at);
                }
                k < want
            });
            let mut polled = Vec::new();
            for k in 0..want {
                let f = done.get_mut(&k).unwrap();
                *f += pace(k, want) / gib;
                polled.push((format!("snap-{k}"), (*f * 100.0).floor() as f32));
            }
            // `quick` quick increments each poll, submitted after it and seen completed at the
            // next: too small to slow the others.
            for q in 0..quick {
                let id = format!("quick-{s}-{q}");
                p.record(
                    &id,
                    "pair",
                    increment(GIB / 10),
                    at + Duration::from_millis(5),
                );
                polled.push((id, 100.0));
            }
            p.polled_at(&polled, at + Duration::from_millis(999));
        }
        p
    }

    #[test]
    fn copies_that_share_the_pairs_throughput_get_as_many_slots_as_keep_it_busy() {
        // 40 GiB/s for the pair, at most 10 per copy: 4 slots, while 4 to 16 copies come and go.
        let shared = |_, n: usize| (40.0 / n as f64).min(10.0);
        let copies = |s: u64| [4, 8, 16, 8, 6, 12][(s / 10 % 6) as usize];
        let learned = world(shared, copies, 0, 120);
        assert_eq!(learned.slots("pair"), 4);
        // Beside the 12 in flight at the end a copy goes at 40 / 13 GiB/s: 15 GiB is not quick
        // (it would be at a copy's own 10 GiB/s), 5 GiB is.
        assert!(!learned.quick("pair", 15 * GIB));
        assert!(learned.quick("pair", 5 * GIB));
        // 80 per pair: 8.
        let wider = |_, n: usize| (80.0 / n as f64).min(10.0);
        assert_eq!(world(wider, copies, 0, 120).slots("pair"), 8);
        // With 8 quick increments a poll beside them, each seen a poll after it ended: still 4
        // (counted as in flight until seen, the pair's throughput would look 2.5 times as wide).
        assert_eq!(world(shared, copies, 8, 120).slots("pair"), 4);
    }

    #[test]
    fn copies_that_go_at_their_own_pace_get_more_slots_as_they_are_seen_to() {
        // Each copy at 10 GiB/s, however many run: every slot the configured limit allows.
        let own = |_, _| 10.0;
        let copies = |s: u64| [4, 8, 16, 8, 6, 12][(s / 10 % 6) as usize];
        assert!(
            world(own, copies, 0, 120).slots("pair") >= 18,
            "not held back"
        );
        // Copies of other sizes each done in a fixed time: paces of 2 to 30 GiB/s, unrelated
        // to the copies in flight.
        let by_size = |k: usize, _| 2.0 + (k * 7 % 15) as f64 * 2.0;
        assert!(
            world(by_size, copies, 0, 120).slots("pair") >= 18,
            "not taken for shared"
        );
        // From 4 copies, growing as the slots allow.
        let p = CopyPace::default();
        let t0 = Instant::now();
        for k in 0..4 {
            p.record(&format!("s{k}"), "pair", full(100 * GIB), t0);
        }
        let polled: Vec<_> = (0..4).map(|k| (format!("s{k}"), 4.0)).collect();
        p.polled_at(&polled, t0 + Duration::from_secs(2));
        assert_eq!(p.slots("pair"), 4, "one sample each: not yet");
        let polled: Vec<_> = (0..4).map(|k| (format!("s{k}"), 8.0)).collect();
        p.polled_at(&polled, t0 + Duration::from_secs(4));
        assert_eq!(p.slots("pair"), 6, "4 in flight + 2");
    }
}
