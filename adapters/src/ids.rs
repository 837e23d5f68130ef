//! Ids for rows that are listed in the order they were written (the notification log, the
//! chat transcript): the time first, so they sort by it as text; then this process's
//! sequence, so rows written in the same millisecond still sort in order; then a random
//! part, so servers sharing a database never collide.

use std::sync::atomic::{AtomicU64, Ordering};

static SEQUENCE: AtomicU64 = AtomicU64::new(0);

/// A new id for a row written at `now` (ms since the epoch).
pub(crate) fn sortable_id(now: i64) -> String {
    format!("{now:013}-{:012}-{:08x}", SEQUENCE.fetch_add(1, Ordering::Relaxed), rand::random::<u32>())
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_sort_by_time_then_by_order_of_making() {
        let ids = [super::sortable_id(5), super::sortable_id(5), super::sortable_id(40), super::sortable_id(1_000)];
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(sorted, ids);
        assert_ne!(ids[0], ids[1]);
    }
}
