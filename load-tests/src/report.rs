//! Latency samples and their summary.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

#[derive(Default)]
pub struct Sample {
    latencies_us: Vec<u64>,
    statuses: BTreeMap<u16, u64>,
    transport_errors: u64,
}

impl Sample {
    pub fn record(&mut self, latency: Duration, status: Option<u16>) {
        self.latencies_us.push(latency.as_micros() as u64);
        match status {
            Some(code) => *self.statuses.entry(code).or_default() += 1,
            None => self.transport_errors += 1,
        }
    }

    pub fn merge(&mut self, other: Sample) {
        self.latencies_us.extend(other.latencies_us);
        for (code, n) in other.statuses {
            *self.statuses.entry(code).or_default() += n;
        }
        self.transport_errors += other.transport_errors;
    }

    pub fn summarize(mut self, elapsed: Duration) -> Summary {
        self.latencies_us.sort_unstable();
        let pct = |p: f64| -> f64 {
            if self.latencies_us.is_empty() {
                return 0.0;
            }
            let i = ((self.latencies_us.len() as f64 - 1.0) * p).round() as usize;
            self.latencies_us[i] as f64 / 1000.0
        };
        let non_2xx: u64 = self
            .statuses
            .iter()
            .filter(|(code, _)| !(200..300).contains(*code))
            .map(|(_, n)| n)
            .sum();
        Summary {
            requests: self.latencies_us.len() as u64,
            seconds: elapsed.as_secs_f64(),
            p50_ms: pct(0.50),
            p99_ms: pct(0.99),
            max_ms: pct(1.0),
            statuses: self.statuses,
            errors: non_2xx + self.transport_errors,
        }
    }
}

pub struct Summary {
    pub requests: u64,
    pub seconds: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub statuses: BTreeMap<u16, u64>,
    pub errors: u64,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "requests={} seconds={:.2} rate={:.0}/s p50={:.2}ms p99={:.2}ms max={:.2}ms errors={} statuses={:?}",
            self.requests,
            self.seconds,
            self.requests as f64 / self.seconds.max(1e-9),
            self.p50_ms,
            self.p99_ms,
            self.max_ms,
            self.errors,
            self.statuses
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_errors() {
        let mut sample = Sample::default();
        for ms in 1..=100 {
            sample.record(
                Duration::from_millis(ms),
                Some(if ms == 100 { 503 } else { 200 }),
            );
        }
        sample.record(Duration::from_millis(5), None);
        let summary = sample.summarize(Duration::from_secs(1));
        assert_eq!(summary.requests, 101);
        assert_eq!(summary.errors, 2);
        assert_eq!(summary.max_ms, 100.0);
        assert!(
            (49.0..=51.0).contains(&summary.p50_ms),
            "{}",
            summary.p50_ms
        );
    }
}
