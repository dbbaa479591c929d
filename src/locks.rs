//! Per-project locks shared by the services that change a project's containers: one
//! release change (deploy switch, scale, repair), volume deletion or backup hold per
//! project at a time.
//! Invariant: every service asks the one `ProjectLocks` the composition root made, so two
//! of them never hold "the" lock of one project at once.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use tokio::sync::Mutex as AsyncMutex;

/// A cheap-clone handle to the daemon's per-project locks.
#[derive(Debug, Clone, Default)]
pub struct ProjectLocks {
    locks: Arc<Mutex<HashMap<String, Arc<AsyncMutex<()>>>>>,
}

impl ProjectLocks {
    /// The lock serialising changes to one project's containers.
    pub fn of(&self, project_id: &str) -> Arc<AsyncMutex<()>> {
        self.locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(project_id.to_owned())
            .or_default()
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_hand_out_the_same_lock_per_project() {
        let locks = ProjectLocks::default();
        let other = locks.clone();
        assert!(Arc::ptr_eq(&locks.of("prj_a"), &other.of("prj_a")));
        assert!(!Arc::ptr_eq(&locks.of("prj_a"), &other.of("prj_b")));
        let held = locks.of("prj_a");
        let _guard = held.try_lock().unwrap();
        assert!(other.of("prj_a").try_lock().is_err());
    }
}
