//! Token buckets per server and per client IP ([governor]'s GCRA), rebuilt when
//! `[rate_limit]` changes.
//!
//! A limited request is answered 429 with `Retry-After` before its signature is checked and
//! without any database write: recording it in `rejections` would let a flood turn into writes,
//! which is what the limit is there to stop. It is counted and logged at `debug`.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

use crate::config::access::RateLimitConfig;

/// Past this many tracked keys, stale buckets (full again) are dropped.
const RETAIN_AFTER_KEYS: usize = 10_000;

/// Which bucket refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limited {
    /// The client IP's bucket.
    Ip {
        /// Whole seconds to wait (at least 1).
        retry_after: u64,
    },
    /// The claimed server's bucket.
    Server {
        /// Whole seconds to wait (at least 1).
        retry_after: u64,
    },
}

impl Limited {
    /// Seconds for `Retry-After`.
    pub fn retry_after(self) -> u64 {
        match self {
            Limited::Ip { retry_after } | Limited::Server { retry_after } => retry_after,
        }
    }
}

struct Buckets {
    config: RateLimitConfig,
    per_server: Option<DefaultKeyedRateLimiter<String>>,
    per_ip: Option<DefaultKeyedRateLimiter<IpAddr>>,
}

fn quota(per_minute: u32, burst: u32) -> Option<Quota> {
    let rate = NonZeroU32::new(per_minute)?;
    let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
    Some(Quota::per_minute(rate).allow_burst(burst))
}

impl Buckets {
    fn new(config: &RateLimitConfig) -> Self {
        Self {
            config: config.clone(),
            per_server: quota(config.per_server_per_minute, config.per_server_burst)
                .map(DefaultKeyedRateLimiter::keyed),
            per_ip: quota(config.per_ip_per_minute, config.per_ip_burst)
                .map(DefaultKeyedRateLimiter::keyed),
        }
    }
}

/// The rate limiters of the agent routes.
pub struct RateLimits {
    /// A std `RwLock` around an `Arc`: readers clone the `Arc` and release at once; the write
    /// lock is taken only when `[rate_limit]` changed. Never held across an await.
    buckets: RwLock<Arc<Buckets>>,
    limited: AtomicU64,
}

impl std::fmt::Debug for RateLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimits")
            .field("limited", &self.limited.load(Ordering::Relaxed))
            .finish()
    }
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            buckets: RwLock::new(Arc::new(Buckets::new(&RateLimitConfig::default()))),
            limited: AtomicU64::new(0),
        }
    }
}

fn seconds(wait: std::time::Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0).max(u64::from(wait.as_secs() == 0))
}

impl RateLimits {
    /// Buckets for `config`, rebuilt (all full again) when the limits changed.
    fn buckets(&self, config: &RateLimitConfig) -> Arc<Buckets> {
        if let Ok(buckets) = self.buckets.read()
            && buckets.config == *config
        {
            return buckets.clone();
        }
        let fresh = Arc::new(Buckets::new(config));
        if let Ok(mut slot) = self.buckets.write() {
            if slot.config != *config {
                tracing::info!(target: "vigil::flags", ?config, "rate limits changed");
                *slot = fresh;
            }
            return slot.clone();
        }
        fresh
    }

    /// Takes a token from `ip`'s bucket.
    pub fn check_ip(&self, config: &RateLimitConfig, ip: IpAddr) -> Result<(), Limited> {
        let buckets = self.buckets(config);
        let Some(limiter) = &buckets.per_ip else {
            return Ok(());
        };
        if limiter.len() > RETAIN_AFTER_KEYS {
            limiter.retain_recent();
        }
        limiter.check_key(&ip).map_err(|not_until| {
            self.limited.fetch_add(1, Ordering::Relaxed);
            Limited::Ip {
                retry_after: seconds(not_until.wait_time_from(DefaultClock::default().now())),
            }
        })
    }

    /// Takes a token from `server_id`'s bucket. Callers pass only servers the host knows (or is
    /// about to register), so the number of buckets is bounded by the number of servers.
    pub fn check_server(&self, config: &RateLimitConfig, server_id: &str) -> Result<(), Limited> {
        let buckets = self.buckets(config);
        let Some(limiter) = &buckets.per_server else {
            return Ok(());
        };
        if limiter.len() > RETAIN_AFTER_KEYS {
            limiter.retain_recent();
        }
        limiter
            .check_key(&server_id.to_owned())
            .map_err(|not_until| {
                self.limited.fetch_add(1, Ordering::Relaxed);
                Limited::Server {
                    retry_after: seconds(not_until.wait_time_from(DefaultClock::default().now())),
                }
            })
    }

    /// Requests refused by a bucket since start-up.
    pub fn limited(&self) -> u64 {
        self.limited.load(Ordering::Relaxed)
    }
}

/// The caps on open registrations: per client address and for the whole host, per hour.
/// Rebuilt (full again) when the configured caps change.
#[derive(Default)]
pub struct RegistrationLimits {
    /// Same discipline as [`RateLimits`]: a std `RwLock` around an `Arc`, written only when
    /// the caps changed, never held across an await.
    caps: RwLock<Option<Arc<RegistrationCaps>>>,
}

struct RegistrationCaps {
    configured: (u32, u32),
    per_ip: Option<DefaultKeyedRateLimiter<IpAddr>>,
    total: Option<governor::DefaultDirectRateLimiter>,
}

fn hourly(per_hour: u32) -> Option<Quota> {
    let n = NonZeroU32::new(per_hour)?;
    Some(Quota::per_hour(n).allow_burst(n))
}

impl std::fmt::Debug for RegistrationLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistrationLimits").finish_non_exhaustive()
    }
}

impl RegistrationLimits {
    fn caps(&self, per_ip: u32, total: u32) -> Arc<RegistrationCaps> {
        if let Ok(caps) = self.caps.read()
            && let Some(caps) = caps.as_ref().filter(|c| c.configured == (per_ip, total))
        {
            return caps.clone();
        }
        let fresh = Arc::new(RegistrationCaps {
            configured: (per_ip, total),
            per_ip: hourly(per_ip).map(DefaultKeyedRateLimiter::keyed),
            total: hourly(total).map(governor::RateLimiter::direct),
        });
        if let Ok(mut slot) = self.caps.write() {
            match slot.as_ref() {
                Some(caps) if caps.configured == (per_ip, total) => return caps.clone(),
                _ => *slot = Some(fresh.clone()),
            }
        }
        fresh
    }

    /// Takes one registration from `ip`'s hourly allowance and the host's; `Err` with whole
    /// seconds to wait when either is spent. An address without an IP (`None`) shares the
    /// host-wide allowance only.
    pub fn check(&self, per_ip: u32, total: u32, ip: Option<IpAddr>) -> Result<(), u64> {
        let caps = self.caps(per_ip, total);
        let wait = |not_until: governor::NotUntil<_>| {
            seconds(not_until.wait_time_from(DefaultClock::default().now()))
        };
        if let (Some(limiter), Some(ip)) = (&caps.per_ip, ip) {
            if limiter.len() > RETAIN_AFTER_KEYS {
                limiter.retain_recent();
            }
            limiter.check_key(&ip).map_err(wait)?;
        }
        if let Some(limiter) = &caps.total {
            limiter.check().map_err(wait)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refused_with_a_retry_after_and_off_when_zero() {
        let limits = RateLimits::default();
        let config = RateLimitConfig {
            per_server_per_minute: 1,
            per_server_burst: 2,
            per_ip_per_minute: 0,
            per_ip_burst: 0,
        };
        assert!(limits.check_server(&config, "a").is_ok());
        assert!(limits.check_server(&config, "a").is_ok());
        let refused = limits.check_server(&config, "a").expect_err("bucket empty");
        assert!((1..=60).contains(&refused.retry_after()), "{refused:?}");
        assert!(limits.check_server(&config, "b").is_ok(), "per key");
        let ip: IpAddr = "127.0.0.1".parse().expect("ip");
        for _ in 0..100 {
            assert!(limits.check_ip(&config, ip).is_ok(), "0 = off");
        }
        // New limits: fresh buckets.
        let raised = RateLimitConfig {
            per_server_burst: 3,
            ..config
        };
        assert!(limits.check_server(&raised, "a").is_ok());
        assert_eq!(limits.limited(), 1);
    }

    #[test]
    fn registrations_are_capped_per_address_and_in_total() {
        let limits = RegistrationLimits::default();
        let a: IpAddr = "192.0.2.1".parse().expect("ip");
        let b: IpAddr = "192.0.2.2".parse().expect("ip");
        assert!(limits.check(2, 3, Some(a)).is_ok());
        assert!(limits.check(2, 3, Some(a)).is_ok());
        let wait = limits.check(2, 3, Some(a)).expect_err("a's hour is spent");
        assert!((1..=3600).contains(&wait), "{wait}");
        assert!(limits.check(2, 3, Some(b)).is_ok(), "b has its own");
        assert!(
            limits.check(2, 3, Some(b)).is_err(),
            "the host's three are spent"
        );
        assert!(limits.check(0, 0, Some(a)).is_ok(), "0 = off");
    }

    #[test]
    fn whole_seconds_round_up() {
        use std::time::Duration;
        assert_eq!(seconds(Duration::from_millis(1)), 1);
        assert_eq!(seconds(Duration::ZERO), 1);
        assert_eq!(seconds(Duration::from_secs(2)), 2);
        assert_eq!(seconds(Duration::from_millis(2001)), 3);
    }
}
