//! The `/readyz` latch: ready only when migrations are applied, hot state is loaded,
//! the database answers, and the service is not draining.

use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;

use crate::telemetry;

#[derive(Debug, Default)]
pub struct Readiness {
    migrations_applied: AtomicBool,
    state_loaded: AtomicBool,
    database_reachable: AtomicBool,
    draining: AtomicBool,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct ReadinessReport {
    pub ready: bool,
    pub migrations_applied: bool,
    pub state_loaded: bool,
    pub database_reachable: bool,
    pub draining: bool,
}

impl Readiness {
    pub fn set_migrations_applied(&self) {
        self.migrations_applied.store(true, Ordering::Release);
        self.publish();
    }

    pub fn set_state_loaded(&self) {
        self.state_loaded.store(true, Ordering::Release);
        self.publish();
    }

    pub fn set_database_reachable(&self, reachable: bool) {
        self.database_reachable.store(reachable, Ordering::Release);
        self.publish();
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
        self.publish();
    }

    pub fn report(&self) -> ReadinessReport {
        let migrations_applied = self.migrations_applied.load(Ordering::Acquire);
        let state_loaded = self.state_loaded.load(Ordering::Acquire);
        let database_reachable = self.database_reachable.load(Ordering::Acquire);
        let draining = self.draining.load(Ordering::Acquire);
        ReadinessReport {
            ready: migrations_applied && state_loaded && database_reachable && !draining,
            migrations_applied,
            state_loaded,
            database_reachable,
            draining,
        }
    }

    fn publish(&self) {
        metrics::gauge!(telemetry::READY).set(if self.report().ready { 1.0 } else { 0.0 });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_every_condition_holds() {
        let r = Readiness::default();
        assert!(!r.report().ready);
        r.set_migrations_applied();
        r.set_state_loaded();
        assert!(!r.report().ready);
        r.set_database_reachable(true);
        assert!(r.report().ready);
        r.set_database_reachable(false);
        assert!(!r.report().ready);
        r.set_database_reachable(true);
        r.start_draining();
        assert!(!r.report().ready);
    }
}
