//! Token buckets: `capacity` requests at once, refilled continuously at
//! `capacity` per `period`. Time is passed in (milliseconds). And what a per-IP
//! limit counts as one source.

use std::net::{IpAddr, Ipv6Addr};

/// The source a per-IP limit counts: an IPv4 address (also when written as an
/// IPv4-mapped IPv6 one), or an IPv6 address's /64 — the block one subscriber
/// or host is routed, whose addresses it may use freely.
pub fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from_bits(v6.to_bits() & !u128::from(u64::MAX))),
        },
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limit {
    capacity: f64,
    per_ms: f64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    tokens: f64,
    updated_ms: i64,
}

impl Limit {
    /// `count` per `period_ms`; `None` when `count` is 0 (no limit).
    pub fn new(count: u64, period_ms: u64) -> Option<Self> {
        (count > 0 && period_ms > 0).then(|| Self {
            capacity: count as f64,
            per_ms: count as f64 / period_ms as f64,
        })
    }

    /// The most one request can take: a full bucket.
    pub fn capacity(&self) -> u64 {
        self.capacity as u64
    }

    pub fn full_bucket(&self, now_ms: i64) -> Bucket {
        Bucket {
            tokens: self.capacity,
            updated_ms: now_ms,
        }
    }

    /// Takes `n` tokens, or says after how many whole seconds they will be there.
    /// Nothing is taken on refusal.
    pub fn take(&self, bucket: &mut Bucket, n: u64, now_ms: i64) -> Result<(), u64> {
        self.refill(bucket, now_ms);
        let n = n as f64;
        if n > self.capacity {
            // Can never fit: wait for a full bucket and split the request.
            return Err(((self.capacity - bucket.tokens) / self.per_ms / 1000.0)
                .ceil()
                .max(1.0) as u64);
        }
        if bucket.tokens >= n {
            bucket.tokens -= n;
            Ok(())
        } else {
            Err(((n - bucket.tokens) / self.per_ms / 1000.0).ceil().max(1.0) as u64)
        }
    }

    /// Returns `n` tokens taken by a request that was refused later on.
    pub fn refund(&self, bucket: &mut Bucket, n: u64) {
        bucket.tokens = (bucket.tokens + n as f64).min(self.capacity);
    }

    /// A full bucket carries no information and can be forgotten.
    pub fn is_full(&self, bucket: &Bucket, now_ms: i64) -> bool {
        let mut copy = *bucket;
        self.refill(&mut copy, now_ms);
        copy.tokens >= self.capacity
    }

    fn refill(&self, bucket: &mut Bucket, now_ms: i64) {
        let elapsed = (now_ms - bucket.updated_ms).max(0) as f64;
        bucket.tokens = (bucket.tokens + elapsed * self.per_ms).min(self.capacity);
        bucket.updated_ms = bucket.updated_ms.max(now_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: u64 = 3_600_000;

    #[test]
    fn a_hundred_per_hour() {
        let limit = Limit::new(100, HOUR).unwrap();
        let mut bucket = limit.full_bucket(0);
        for _ in 0..100 {
            limit.take(&mut bucket, 1, 0).unwrap();
        }
        // One token comes back every 36 s.
        assert_eq!(limit.take(&mut bucket, 1, 0), Err(36));
        assert_eq!(limit.take(&mut bucket, 1, 35_000), Err(1));
        limit.take(&mut bucket, 1, 36_000).unwrap();
        assert!(!limit.is_full(&bucket, 36_000));
        assert!(limit.is_full(&bucket, 36_000 + HOUR as i64));
    }

    #[test]
    fn a_batch_takes_all_or_nothing() {
        let limit = Limit::new(10, 10_000).unwrap();
        let mut bucket = limit.full_bucket(0);
        limit.take(&mut bucket, 8, 0).unwrap();
        assert_eq!(limit.take(&mut bucket, 5, 0), Err(3));
        limit.take(&mut bucket, 2, 0).unwrap();
        assert!(limit.take(&mut bucket, 11, 0).is_err());
        limit.refund(&mut bucket, 3);
        limit.take(&mut bucket, 3, 0).unwrap();
        limit.refund(&mut bucket, 50);
        assert!(limit.is_full(&bucket, 0));
        assert_eq!(Limit::new(0, 1), None);
    }

    #[test]
    fn clocks_going_backwards_do_not_mint_tokens() {
        let limit = Limit::new(1, 1_000).unwrap();
        let mut bucket = limit.full_bucket(10_000);
        limit.take(&mut bucket, 1, 10_000).unwrap();
        assert!(limit.take(&mut bucket, 1, 0).is_err());
        assert!(limit.take(&mut bucket, 1, 10_500).is_err());
    }

    #[test]
    fn an_ipv6_host_is_its_64_and_ipv4_is_itself() {
        let key = |s: &str| source_key(s.parse::<IpAddr>().unwrap());
        assert_eq!(key("2001:db8:1:2:aaaa::1"), key("2001:db8:1:2:ffff:1:2:3"));
        assert_eq!(key("2001:db8:1:2::7").to_string(), "2001:db8:1:2::");
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("203.0.113.9").to_string(), "203.0.113.9");
        assert_ne!(key("203.0.113.9"), key("203.0.113.10"));
        assert_eq!(key("::ffff:203.0.113.9"), key("203.0.113.9"));
    }
}
