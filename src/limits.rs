//! Per-wallet and per-IP rate limits (SPEC §4 rule 3), and the per-IP limit on
//! sign-in nonces: token buckets kept in concurrent maps; idle (full) buckets are
//! swept by the maintenance actor.

use std::hash::Hash;
use std::net::IpAddr;

use alloy::primitives::Address;
use dashmap::DashMap;

use crate::config::RateLimitSettings;
use crate::domain::rate_limit::{Bucket, Limit, source_key};

const HOUR_MS: u64 = 3_600_000;

pub struct RateLimiter {
    per_wallet: Option<Limit>,
    per_ip: Option<Limit>,
    nonces_per_ip: Option<Limit>,
    wallets: DashMap<Address, Bucket>,
    ips: DashMap<IpAddr, Bucket>,
    nonce_ips: DashMap<IpAddr, Bucket>,
}

/// Refused: retry after this many seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    pub retry_after_secs: u64,
    pub scope: &'static str,
}

impl RateLimiter {
    pub fn new(settings: &RateLimitSettings) -> Self {
        Self {
            per_wallet: Limit::new(settings.per_wallet_per_hour, HOUR_MS),
            per_ip: Limit::new(settings.per_ip_per_hour, HOUR_MS),
            nonces_per_ip: Limit::new(settings.nonces_per_ip_per_hour, HOUR_MS),
            wallets: DashMap::new(),
            ips: DashMap::new(),
            nonce_ips: DashMap::new(),
        }
    }

    /// The most interactions one request may carry (a full bucket of the limits
    /// that apply): a larger batch could never be admitted, whenever retried.
    pub fn most_at_once(&self, with_ip: bool) -> Option<u64> {
        let ip = self.per_ip.as_ref().filter(|_| with_ip);
        [self.per_wallet.as_ref(), ip]
            .into_iter()
            .flatten()
            .map(Limit::capacity)
            .min()
    }

    /// Takes `n` from the wallet's and the IP's buckets, or neither. (An IP is
    /// counted as its source: an IPv6 address by its /64.)
    pub fn check(
        &self,
        wallet: Address,
        ip: Option<IpAddr>,
        n: u64,
        now_ms: i64,
    ) -> Result<(), Limited> {
        if let Some(limit) = &self.per_wallet {
            take(&self.wallets, limit, wallet, n, now_ms).map_err(|s| limited(s, "wallet"))?;
        }
        if let (Some(limit), Some(ip)) = (&self.per_ip, ip)
            && let Err(secs) = take(&self.ips, limit, source_key(ip), n, now_ms)
        {
            // Give the wallet its tokens back: nothing was accepted.
            if let (Some(wallet_limit), Some(mut bucket)) =
                (&self.per_wallet, self.wallets.get_mut(&wallet))
            {
                wallet_limit.refund(&mut bucket, n);
            }
            return Err(limited(secs, "ip"));
        }
        Ok(())
    }

    /// Takes a sign-in nonce from the IP's bucket.
    pub fn check_nonce(&self, ip: Option<IpAddr>, now_ms: i64) -> Result<(), Limited> {
        match (&self.nonces_per_ip, ip) {
            (Some(limit), Some(ip)) => take(&self.nonce_ips, limit, source_key(ip), 1, now_ms)
                .map_err(|s| limited(s, "nonce_ip")),
            _ => Ok(()),
        }
    }

    /// Forgets buckets that are full again; returns how many remain.
    pub fn sweep(&self, now_ms: i64) -> usize {
        sweep(&self.wallets, self.per_wallet.as_ref(), now_ms);
        sweep(&self.ips, self.per_ip.as_ref(), now_ms);
        sweep(&self.nonce_ips, self.nonces_per_ip.as_ref(), now_ms);
        self.wallets.len() + self.ips.len() + self.nonce_ips.len()
    }
}

fn limited(retry_after_secs: u64, scope: &'static str) -> Limited {
    Limited {
        retry_after_secs,
        scope,
    }
}

fn take<K: Hash + Eq>(
    map: &DashMap<K, Bucket>,
    limit: &Limit,
    key: K,
    n: u64,
    now_ms: i64,
) -> Result<(), u64> {
    let mut bucket = map.entry(key).or_insert_with(|| limit.full_bucket(now_ms));
    limit.take(&mut bucket, n, now_ms)
}

fn sweep<K: Hash + Eq>(map: &DashMap<K, Bucket>, limit: Option<&Limit>, now_ms: i64) {
    if let Some(limit) = limit {
        map.retain(|_, b| !limit.is_full(b, now_ms));
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use alloy::primitives::Address;

    use super::RateLimiter;
    use crate::config::RateLimitSettings;

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn addresses_of_one_ipv6_64_share_their_buckets() {
        let limiter = RateLimiter::new(&RateLimitSettings {
            per_wallet_per_hour: 0,
            per_ip_per_hour: 1,
            nonces_per_ip_per_hour: 1,
        });
        let (one, two) = (Address::repeat_byte(1), Address::repeat_byte(2));
        limiter.check(one, ip("2001:db8::1"), 1, 0).unwrap();
        let refused = limiter.check(two, ip("2001:db8::2"), 1, 0).unwrap_err();
        assert_eq!(refused.scope, "ip");
        limiter.check(two, ip("2001:db8:0:1::2"), 1, 0).unwrap();

        limiter.check_nonce(ip("2001:db8::1"), 0).unwrap();
        let refused = limiter.check_nonce(ip("2001:db8::ffff"), 0).unwrap_err();
        assert_eq!(refused.scope, "nonce_ip");
        limiter.check_nonce(ip("2001:db8:0:1::1"), 0).unwrap();
    }
}
