//! Token buckets (with AIMD) and the concurrency-gate table. Quotas are data, given by the caller.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::keys::{BucketKey, GateKey};

/// One token bucket: `burst` tokens at most, refilled at `per_second`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BucketConfig {
    pub burst: f64,
    pub per_second: f64,
}

impl BucketConfig {
    pub fn new(burst: f64, per_second: f64) -> Self {
        BucketConfig { burst, per_second }
    }
}

/// How a bucket's rate reacts to throttling (multiplicative decrease) and success (additive increase).
#[derive(Debug, Clone, Copy)]
pub struct Aimd {
    /// Rate multiplier on a throttling error, e.g. 0.5.
    pub decrease: f64,
    /// Lowest rate as a fraction of the configured one, e.g. 0.05.
    pub floor: f64,
    /// Rate added per success, as a fraction of the configured rate, e.g. 0.05.
    pub increase: f64,
}

impl Default for Aimd {
    fn default() -> Self {
        Aimd {
            decrease: 0.5,
            floor: 0.05,
            increase: 0.05,
        }
    }
}

#[derive(Debug)]
struct Bucket {
    config: BucketConfig,
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn new(config: BucketConfig, now: Instant) -> Self {
        Bucket {
            config,
            rate: config.per_second,
            tokens: config.burst,
            last: now,
        }
    }
    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + dt * self.rate).min(self.config.burst);
        self.last = now;
    }
    fn wait_for_one(&self) -> Duration {
        if self.tokens >= 1.0 {
            Duration::ZERO
        } else if self.rate <= 0.0 {
            Duration::from_secs(3600)
        } else {
            // Round up a little so the sleeper finds a whole token when it wakes.
            Duration::from_secs_f64((1.0 - self.tokens) / self.rate) + Duration::from_micros(50)
        }
    }
}

/// The limiter shared by the walker and the steps: token buckets per key and the gate table.
///
/// Bucket keys look like `prod/us-east-1/ec2:CopySnapshot`; the table is looked up by the full
/// key first, then by the part after the last `/` (`ec2:CopySnapshot`). A key found in neither is
/// not limited. Gate keys look like `snapshot-copies/prod/eu-west-2`; looked up by full key, then
/// by the part before the first `/`. A gate found in neither has no limit.
#[derive(Debug)]
pub struct Limits {
    table: HashMap<String, BucketConfig>,
    gates: HashMap<String, usize>,
    aimd: Aimd,
    buckets: Mutex<HashMap<String, Option<Bucket>>>,
    audit: Option<Mutex<Vec<(String, Instant)>>>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits::new(HashMap::new(), HashMap::new())
    }
}

impl Limits {
    pub fn new(buckets: HashMap<String, BucketConfig>, gates: HashMap<String, usize>) -> Self {
        Limits {
            table: buckets,
            gates,
            aimd: Aimd::default(),
            buckets: Mutex::new(HashMap::new()),
            audit: None,
        }
    }
    pub fn with_aimd(mut self, aimd: Aimd) -> Self {
        self.aimd = aimd;
        self
    }
    /// Record every token granted (for tests and diagnostics).
    pub fn with_audit(mut self) -> Self {
        self.audit = Some(Mutex::new(Vec::new()));
        self
    }
    /// Tokens granted so far as (bucket key, time), when auditing.
    pub fn grants(&self) -> Vec<(String, Instant)> {
        self.audit
            .as_ref()
            .map(|a| a.lock().unwrap().clone())
            .unwrap_or_default()
    }

    /// The configuration a bucket key resolves to, if it is limited: an entry for the whole
    /// key, else the quota's.
    pub fn bucket_config(&self, key: &BucketKey) -> Option<BucketConfig> {
        self.table
            .get(key.as_str())
            .or_else(|| self.table.get(key.quota()))
            .copied()
    }

    /// Slots of a gate, `None` if unlimited.
    pub fn gate_slots(&self, key: &GateKey) -> Option<usize> {
        self.gates
            .get(key.as_str())
            .or_else(|| self.gates.get(key.limit()))
            .copied()
    }

    /// Current rate of a bucket (after AIMD), if limited.
    pub fn current_rate(&self, key: &BucketKey) -> Option<f64> {
        let mut map = self.buckets.lock().unwrap();
        self.entry(&mut map, key, Instant::now())
            .as_ref()
            .map(|b| b.rate)
    }

    fn entry<'m>(
        &self,
        map: &'m mut HashMap<String, Option<Bucket>>,
        key: &BucketKey,
        now: Instant,
    ) -> &'m mut Option<Bucket> {
        if !map.contains_key(key.as_str()) {
            let b = self.bucket_config(key).map(|c| Bucket::new(c, now));
            map.insert(key.as_str().to_string(), b);
        }
        map.get_mut(key.as_str()).unwrap()
    }

    /// Take one token from each bucket, all or none. `Err(wait)` says how long until it may work.
    pub fn try_take(&self, keys: &[BucketKey]) -> Result<(), Duration> {
        if keys.is_empty() {
            return Ok(());
        }
        let now = Instant::now();
        let mut map = self.buckets.lock().unwrap();
        let mut wait = Duration::ZERO;
        for k in keys {
            if let Some(b) = self.entry(&mut map, k, now) {
                b.refill(now);
                wait = wait.max(b.wait_for_one());
            }
        }
        if !wait.is_zero() {
            return Err(wait);
        }
        for k in keys {
            if let Some(Some(b)) = map.get_mut(k.as_str()) {
                b.tokens -= 1.0;
                if let Some(a) = &self.audit {
                    a.lock().unwrap().push((k.to_string(), now));
                }
            }
        }
        Ok(())
    }

    /// Wait for and take one token from each bucket (for calls a step makes on its own).
    pub async fn take(&self, keys: &[BucketKey]) {
        while let Err(wait) = self.try_take(keys) {
            tokio::time::sleep(wait).await;
        }
    }

    /// A call drawing on these buckets was throttled: slow them down and empty them.
    pub fn throttled(&self, keys: &[BucketKey]) {
        let now = Instant::now();
        let mut map = self.buckets.lock().unwrap();
        for k in keys {
            if let Some(b) = self.entry(&mut map, k, now) {
                b.refill(now);
                let floor = b.config.per_second * self.aimd.floor;
                b.rate = (b.rate * self.aimd.decrease).max(floor);
                b.tokens = b.tokens.min(0.0);
            }
        }
    }

    /// A call drawing on these buckets succeeded: raise their rate back toward the configured one.
    pub fn succeeded(&self, keys: &[BucketKey]) {
        if keys.is_empty() {
            return;
        }
        let now = Instant::now();
        let mut map = self.buckets.lock().unwrap();
        for k in keys {
            if let Some(b) = self.entry(&mut map, k, now)
                && b.rate < b.config.per_second
            {
                b.refill(now);
                b.rate =
                    (b.rate + b.config.per_second * self.aimd.increase).min(b.config.per_second);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits::new(
            HashMap::from([("ec2:CopySnapshot".to_string(), BucketConfig::new(2.0, 10.0))]),
            HashMap::new(),
        )
    }

    #[tokio::test]
    async fn burst_then_refill() {
        let l = limits();
        let k = vec![BucketKey::new("a/r", "ec2:CopySnapshot")];
        assert!(l.try_take(&k).is_ok());
        assert!(l.try_take(&k).is_ok());
        let wait = l.try_take(&k).unwrap_err();
        assert!(wait <= Duration::from_millis(101));
        tokio::time::sleep(wait).await;
        assert!(l.try_take(&k).is_ok());
        // Unknown buckets are not limited.
        for _ in 0..100 {
            assert!(l.try_take(&[BucketKey::new("x", "y")]).is_ok());
        }
    }

    #[tokio::test]
    async fn aimd_halves_and_recovers() {
        let l = limits();
        let k = vec![BucketKey::new("a/r", "ec2:CopySnapshot")];
        l.throttled(&k);
        assert_eq!(l.current_rate(&k[0]), Some(5.0));
        for _ in 0..100 {
            l.throttled(&k);
        }
        assert_eq!(l.current_rate(&k[0]), Some(0.5));
        for _ in 0..5 {
            l.succeeded(&k);
        }
        assert_eq!(l.current_rate(&k[0]), Some(3.0));
        for _ in 0..100 {
            l.succeeded(&k);
        }
        assert_eq!(l.current_rate(&k[0]), Some(10.0));
    }

    #[test]
    fn gate_lookup() {
        let l = Limits::new(
            HashMap::new(),
            HashMap::from([("snapshot-copies".to_string(), 20)]),
        );
        let gate = |limit| GateKey::new(limit, "prod/eu-west-2");
        assert_eq!(l.gate_slots(&gate("snapshot-copies")), Some(20));
        assert_eq!(l.gate_slots(&gate("image-copies")), None);
    }
}
