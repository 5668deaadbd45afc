//! Process metrics read from `/proc/self` (Linux, where the service runs; elsewhere
//! nothing is published): resident memory, CPU time, open file descriptors,
//! threads. Sampled by the maintenance actor each tick.

use std::path::Path;

use super::{
    PROCESS_CPU_SECONDS_TOTAL, PROCESS_OPEN_FDS, PROCESS_RESIDENT_MEMORY_BYTES, PROCESS_THREADS,
};

/// `/proc/self/stat` counts CPU time in USER_HZ ticks, which Linux fixes at 100 per
/// second for user space on every architecture it reports them for.
const TICKS_PER_SECOND: u64 = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessSample {
    pub resident_bytes: u64,
    pub threads: u64,
    pub cpu_ticks: u64,
    pub open_fds: u64,
}

/// Reads the current process's figures; `None` when `/proc` is not there.
pub fn sample() -> Option<ProcessSample> {
    let proc_self = Path::new("/proc/self");
    let status = std::fs::read_to_string(proc_self.join("status")).ok()?;
    let stat = std::fs::read_to_string(proc_self.join("stat")).ok()?;
    let (resident_bytes, threads) = parse_status(&status)?;
    let cpu_ticks = parse_stat_cpu_ticks(&stat)?;
    // The listing itself holds one descriptor open on the directory.
    let open_fds = std::fs::read_dir(proc_self.join("fd"))
        .ok()?
        .count()
        .saturating_sub(1) as u64;
    Some(ProcessSample {
        resident_bytes,
        threads,
        cpu_ticks,
        open_fds,
    })
}

/// Samples and publishes the process metrics.
pub fn publish() {
    let Some(sample) = sample() else {
        return;
    };
    metrics::gauge!(PROCESS_RESIDENT_MEMORY_BYTES).set(sample.resident_bytes as f64);
    metrics::gauge!(PROCESS_THREADS).set(sample.threads as f64);
    metrics::gauge!(PROCESS_OPEN_FDS).set(sample.open_fds as f64);
    metrics::counter!(PROCESS_CPU_SECONDS_TOTAL).absolute(sample.cpu_ticks / TICKS_PER_SECOND);
}

/// `VmRSS` (kB → bytes) and `Threads` from `/proc/self/status`.
fn parse_status(text: &str) -> Option<(u64, u64)> {
    let field = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|value| value.parse::<u64>().ok())
    };
    Some((field("VmRSS:")? * 1024, field("Threads:")?))
}

/// `utime + stime` (fields 14 and 15) from `/proc/self/stat`. The command name
/// (field 2) is in parentheses and may hold spaces, so fields are counted after
/// its closing parenthesis.
fn parse_stat_cpu_ticks(text: &str) -> Option<u64> {
    let after_name = &text[text.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_gives_resident_memory_and_threads() {
        let text = "Name:\trewardflow\nVmPeak:\t  900 kB\nVmRSS:\t   20480 kB\nThreads:\t7\n";
        assert_eq!(parse_status(text), Some((20480 * 1024, 7)));
        assert_eq!(parse_status("Name:\tx\n"), None);
    }

    #[test]
    fn stat_cpu_ticks_survive_spaces_and_parentheses_in_the_name() {
        let text =
            "4242 (tokio (rt) x) S 1 4242 4242 0 -1 4194560 1234 0 0 0 150 27 0 0 20 0 9 0 100 0 0";
        assert_eq!(parse_stat_cpu_ticks(text), Some(177));
        assert_eq!(parse_stat_cpu_ticks("4242 (x) S 1"), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_can_be_sampled() {
        let sample = sample().expect("/proc/self is readable on Linux");
        assert!(sample.resident_bytes > 1024 * 1024, "{sample:?}");
        assert!(sample.threads >= 1 && sample.open_fds >= 3, "{sample:?}");
    }
}
