//! The writer's state shared with the front door and across the writer's
//! restarts: admission (rows held, database health), settles waiting, and the
//! flushes still running, which a restarted writer waits out.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::sync::Notify;

use crate::telemetry;

/// The writer's state shared with the front door and across its restarts: rows it
/// holds and database health (admission), product actors waiting for it to settle
/// their writes, and flushes still running.
#[derive(Debug)]
pub struct WriterGate {
    pending_rows: AtomicU64,
    max_pending_rows: u64,
    healthy: AtomicBool,
    settles_waiting: AtomicU64,
    /// Flushes started and not finished, by any incarnation of the writer: a
    /// flush runs on its own task, which outlives a writer that fails.
    flushes_running: AtomicU64,
    flush_finished: Notify,
}

impl WriterGate {
    pub fn new(max_pending_rows: u64) -> Self {
        Self {
            pending_rows: AtomicU64::new(0),
            max_pending_rows,
            healthy: AtomicBool::new(true),
            settles_waiting: AtomicU64::new(0),
            flushes_running: AtomicU64::new(0),
            flush_finished: Notify::new(),
        }
    }

    /// Reserves room for `rows`; false when the writer is full or the database down.
    pub fn try_reserve(&self, rows: u64) -> bool {
        if !self.healthy.load(Ordering::Acquire) {
            return false;
        }
        let before = self.pending_rows.fetch_add(rows, Ordering::AcqRel);
        if before + rows > self.max_pending_rows {
            self.pending_rows.fetch_sub(rows, Ordering::AcqRel);
            return false;
        }
        true
    }

    /// Saturating: a restarted writer resets the count, and a reservation taken
    /// before the restart may still be released after it.
    pub fn release(&self, rows: u64) {
        let _ = self
            .pending_rows
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                Some(n.saturating_sub(rows))
            });
    }

    pub fn pending_rows(&self) -> u64 {
        self.pending_rows.load(Ordering::Acquire)
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    /// Settles queued in the writer's lanes.
    pub fn settles_waiting(&self) -> u64 {
        self.settles_waiting.load(Ordering::Acquire)
    }

    /// Returns once no flush is running.
    pub(super) async fn no_flush_running(&self) {
        loop {
            let finished = self.flush_finished.notified();
            if self.flushes_running.load(Ordering::Acquire) == 0 {
                return;
            }
            finished.await;
        }
    }

    /// A settle queued in a lane.
    pub(super) fn settle_queued(&self) {
        let now = self.settles_waiting.fetch_add(1, Ordering::AcqRel) + 1;
        metrics::gauge!(telemetry::WRITER_SETTLES_WAITING).set(now as f64);
    }

    /// A queued settle answered.
    pub(super) fn settle_answered(&self) {
        let now = self.settles_waiting.fetch_sub(1, Ordering::AcqRel) - 1;
        metrics::gauge!(telemetry::WRITER_SETTLES_WAITING).set(now as f64);
    }

    /// A (re)started writer holds nothing, and takes interactions.
    pub(super) fn reset(&self) {
        self.pending_rows.store(0, Ordering::Release);
        self.settles_waiting.store(0, Ordering::Release);
        metrics::gauge!(telemetry::WRITER_SETTLES_WAITING).set(0.0);
        self.set_healthy(true);
    }

    pub(super) fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::Release);
    }
}

/// A flush counted in [`WriterGate`] until dropped, also when its task panics.
pub(super) struct FlushRunning(Arc<WriterGate>);

impl FlushRunning {
    pub(super) fn start(gate: &Arc<WriterGate>) -> Self {
        gate.flushes_running.fetch_add(1, Ordering::AcqRel);
        Self(gate.clone())
    }
}

impl Drop for FlushRunning {
    fn drop(&mut self) {
        self.0.flushes_running.fetch_sub(1, Ordering::AcqRel);
        self.0.flush_finished.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::WriterGate;

    #[test]
    fn the_gate_bounds_pending_rows_and_closes_when_unhealthy() {
        let gate = WriterGate::new(10);
        assert!(gate.try_reserve(6));
        assert!(!gate.try_reserve(5));
        assert!(gate.try_reserve(4));
        gate.release(10);
        assert_eq!(gate.pending_rows(), 0);
        gate.release(5);
        assert_eq!(gate.pending_rows(), 0, "release saturates");
        gate.set_healthy(false);
        assert!(!gate.try_reserve(1));
        gate.set_healthy(true);
        assert!(gate.try_reserve(1));
    }
}
