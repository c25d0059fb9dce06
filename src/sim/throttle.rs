//! The gateway's per-project rate limit, as a token bucket.

use std::time::Instant;

use dashmap::DashMap;

use super::scenario::Throttle;

/// `tokens` refill at `rate` a second up to `burst`; a request takes one.
#[derive(Clone, Copy, Debug)]
pub struct TokenBucket {
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn full(burst: u32, now: Instant) -> Self {
        Self { tokens: f64::from(burst), last: now }
    }

    /// Takes a token if there is one.
    pub fn try_take(&mut self, now: Instant, rate: f64, burst: u32) -> bool {
        let refill = now.saturating_duration_since(self.last).as_secs_f64() * rate;
        self.tokens = (self.tokens + refill).min(f64::from(burst));
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// One bucket per project, created on first use.
pub struct Throttles {
    config: Option<Throttle>,
    buckets: DashMap<String, TokenBucket>,
}

impl Throttles {
    pub fn new(config: Option<Throttle>) -> Self {
        Self { config, buckets: DashMap::new() }
    }

    pub fn config(&self) -> Option<&Throttle> {
        self.config.as_ref()
    }

    /// True when the request may pass. The shard lock is held only for the
    /// arithmetic, never across an await.
    pub fn admit(&self, project_id: &str, now: Instant) -> bool {
        let Some(cfg) = &self.config else { return true };
        if let Some(mut bucket) = self.buckets.get_mut(project_id) {
            return bucket.try_take(now, cfg.rate, cfg.burst);
        }
        let mut bucket = self.buckets.entry(project_id.to_owned()).or_insert(TokenBucket::full(cfg.burst, now));
        bucket.try_take(now, cfg.rate, cfg.burst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn burst_then_refill_at_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::full(3, t0);
        assert_eq!((0..5).map(|_| b.try_take(t0, 10.0, 3)).collect::<Vec<_>>(), [true, true, true, false, false]);
        // 10 a second: one token back after 100 ms, never more than the burst.
        assert!(b.try_take(t0 + Duration::from_millis(100), 10.0, 3));
        assert!(!b.try_take(t0 + Duration::from_millis(150), 10.0, 3));
        let later = t0 + Duration::from_secs(60);
        assert_eq!((0..4).filter(|_| b.try_take(later, 10.0, 3)).count(), 3);
    }

    #[test]
    fn projects_have_separate_buckets() {
        let t = Throttles::new(Some(Throttle { rate: 0.001, burst: 1, retry_after: None }));
        let now = Instant::now();
        assert!(t.admit("a", now));
        assert!(!t.admit("a", now));
        assert!(t.admit("b", now));
        assert!(Throttles::new(None).admit("a", now));
    }
}
