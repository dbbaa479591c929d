//! The memory static sites may hold (`[edge] static_memory_mb`), shared by every site the
//! edge has loaded. Invariant: `used` is the sum of the live reservations, never above the
//! limit; a reservation gives its bytes back when dropped (its site unloaded).

use std::sync::{
    atomic::{AtomicU64, Ordering},
    Arc,
};

#[derive(Debug)]
pub struct MemoryBudget {
    limit: u64,
    used: AtomicU64,
}

impl MemoryBudget {
    pub fn new(limit: u64) -> Self {
        Self {
            limit,
            used: AtomicU64::new(0),
        }
    }

    /// Bytes held by loaded sites now.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    fn take(&self, bytes: u64) -> bool {
        self.used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                used.checked_add(bytes).filter(|total| *total <= self.limit)
            })
            .is_ok()
    }

    fn give_back(&self, bytes: u64) {
        self.used.fetch_sub(bytes, Ordering::Relaxed);
    }
}

/// The bytes one site holds of a budget.
#[derive(Debug, Default)]
pub struct Reservation {
    budget: Option<Arc<MemoryBudget>>,
    bytes: u64,
}

impl Reservation {
    pub fn new(budget: Arc<MemoryBudget>) -> Self {
        Self {
            budget: Some(budget),
            bytes: 0,
        }
    }

    /// Takes `bytes` more if the budget has them.
    pub fn take(&mut self, bytes: u64) -> bool {
        let Some(budget) = &self.budget else {
            return false;
        };
        let taken = budget.take(bytes);
        if taken {
            self.bytes += bytes;
        }
        taken
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Some(budget) = &self.budget {
            budget.give_back(self.bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_stay_within_the_limit_and_give_back_on_drop() {
        let budget = Arc::new(MemoryBudget::new(100));
        let mut first = Reservation::new(budget.clone());
        assert!(first.take(60));
        let mut second = Reservation::new(budget.clone());
        assert!(!second.take(50), "60 + 50 is over the limit");
        assert!(second.take(40));
        assert_eq!(budget.used(), 100);
        drop(first);
        assert_eq!(budget.used(), 40);
        drop(second);
        assert_eq!(budget.used(), 0);
        assert!(!Reservation::default().take(1), "no budget, no memory");
    }
}
