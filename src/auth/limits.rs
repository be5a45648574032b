//! Rate limits (governor, GCRA): per API key, per client address, and failed authentications
//! per client address. A limiter whose rate is 0 in configuration does not exist.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use parking_lot::Mutex;

use crate::config::LimitsConfig;

type Keyed<K> = RateLimiter<K, DefaultKeyedStateStore<K>, DefaultClock, StateInformationMiddleware>;

/// What the client may still send; becomes the `X-RateLimit-*` headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Allowance {
    pub limit: u32,
    pub remaining: u32,
    /// Seconds until the full burst is available again.
    pub reset_secs: u64,
}

/// A refused request: `Retry-After` and which limit refused it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub limit: u32,
    pub retry_after_secs: u64,
    pub what: Limited,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limited {
    Key,
    Address,
    AuthFailures,
}

struct Limiter<K: Hash + Eq + Clone> {
    limiter: Keyed<K>,
    quota: Quota,
}

impl<K: Hash + Eq + Clone> Limiter<K> {
    fn new(quota: Option<Quota>) -> Option<Self> {
        quota.map(|quota| Limiter { limiter: RateLimiter::keyed(quota).with_middleware(), quota })
    }

    fn check(&self, key: &K, what: Limited) -> Result<Allowance, Refusal> {
        let limit = self.quota.burst_size().get();
        let interval = self.quota.replenish_interval();
        match self.limiter.check_key(key) {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity();
                let reset = interval.saturating_mul(limit.saturating_sub(remaining));
                Ok(Allowance { limit, remaining, reset_secs: ceil_secs(reset) })
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.limiter.clock().now());
                Err(Refusal { limit, retry_after_secs: ceil_secs(wait).max(1), what })
            }
        }
    }
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

fn per_second(rate: u32, burst: u32) -> Option<Quota> {
    let rate = NonZeroU32::new(rate)?;
    Some(Quota::per_second(rate).allow_burst(NonZeroU32::new(burst).unwrap_or(rate)))
}

pub struct RateLimits {
    per_key: Option<Limiter<String>>,
    per_address: Option<Limiter<IpAddr>>,
    failures: Option<Limiter<IpAddr>>,
    /// Addresses out of failure budget, until when: they are refused before any key is checked.
    blocked: Mutex<HashMap<IpAddr, Instant>>,
}

impl RateLimits {
    pub fn new(config: &LimitsConfig) -> RateLimits {
        let failures = NonZeroU32::new(config.auth_failures_per_minute).map(Quota::per_minute);
        RateLimits {
            per_key: Limiter::new(per_second(config.per_key_per_second, config.per_key_burst)),
            per_address: Limiter::new(per_second(config.per_address_per_second, config.per_address_burst)),
            failures: Limiter::new(failures),
            blocked: Mutex::new(HashMap::new()),
        }
    }

    /// Counts one request by API key (`master` for the master key).
    pub fn check_key(&self, key_id: &str) -> Result<Option<Allowance>, Refusal> {
        self.per_key.as_ref().map(|l| l.check(&key_id.to_string(), Limited::Key)).transpose()
    }

    /// Counts one request from `address`.
    pub fn check_address(&self, address: IpAddr) -> Result<Option<Allowance>, Refusal> {
        self.per_address.as_ref().map(|l| l.check(&address, Limited::Address)).transpose()
    }

    /// Refuses an address that ran out of failed authentications, until its budget refills.
    pub fn blocked(&self, address: IpAddr) -> Option<Refusal> {
        let failures = self.failures.as_ref()?;
        let mut blocked = self.blocked.lock();
        let until = *blocked.get(&address)?;
        let now = Instant::now();
        if until <= now {
            blocked.remove(&address);
            return None;
        }
        Some(Refusal {
            limit: failures.quota.burst_size().get(),
            retry_after_secs: ceil_secs(until - now).max(1),
            what: Limited::AuthFailures,
        })
    }

    /// Counts one failed authentication; past the budget, blocks the address and returns why.
    pub fn failed_authentication(&self, address: IpAddr) -> Option<Refusal> {
        let refusal = self.failures.as_ref()?.check(&address, Limited::AuthFailures).err()?;
        let until = Instant::now() + Duration::from_secs(refusal.retry_after_secs);
        self.blocked.lock().insert(address, until);
        Some(refusal)
    }

    /// Drops state of keys and addresses whose buckets are full again (bounded memory).
    pub fn forget_idle(&self) {
        if let Some(l) = &self.per_key {
            l.limiter.retain_recent();
            l.limiter.shrink_to_fit();
        }
        for l in [&self.per_address, &self.failures].into_iter().flatten() {
            l.limiter.retain_recent();
            l.limiter.shrink_to_fit();
        }
        let now = Instant::now();
        self.blocked.lock().retain(|_, until| *until > now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(per_key: u32, burst: u32, failures: u32) -> LimitsConfig {
        LimitsConfig {
            per_key_per_second: per_key,
            per_key_burst: burst,
            per_address_per_second: 0,
            per_address_burst: 0,
            auth_failures_per_minute: failures,
        }
    }

    #[test]
    fn burst_then_refusal_with_retry_after() {
        let limits = RateLimits::new(&config(1, 3, 0));
        let first = limits.check_key("k").unwrap().unwrap();
        assert_eq!((first.limit, first.remaining), (3, 2));
        limits.check_key("k").unwrap();
        limits.check_key("k").unwrap();
        let refused = limits.check_key("k").unwrap_err();
        assert_eq!(refused.what, Limited::Key);
        assert_eq!(refused.retry_after_secs, 1);
        assert!(limits.check_key("other").is_ok(), "keys are limited separately");
        assert_eq!(limits.check_address("127.0.0.1".parse().unwrap()), Ok(None), "0 turns a limit off");
    }

    #[test]
    fn failed_authentications_block_the_address() {
        let limits = RateLimits::new(&config(0, 0, 2));
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        assert!(limits.failed_authentication(a).is_none());
        assert!(limits.failed_authentication(a).is_none());
        assert!(limits.blocked(a).is_none());
        let refusal = limits.failed_authentication(a).expect("third failure in a minute is refused");
        assert!(refusal.retry_after_secs >= 1 && refusal.retry_after_secs <= 30, "{refusal:?}");
        assert!(limits.blocked(a).is_some());
        assert!(limits.blocked(b).is_none(), "other addresses are not affected");
    }
}
