//! A function's waiting calls: first in, first out within each
//! [`Priority`](crate::call::Priority), and every
//! waiting high-priority call before any normal one, every normal one before any low one.
//! Synchronous calls are all normal, so without background jobs of other priorities this is
//! one `VecDeque` (the other two stay empty and unallocated).

use std::collections::VecDeque;

use super::Waiting;

/// The calls waiting for one function's workers.
pub(super) struct CallQueue<C> {
    /// Indexed by [`Priority::rank`]: high, normal, low.
    levels: [VecDeque<C>; 3],
}

impl<C> Default for CallQueue<C> {
    fn default() -> Self {
        Self {
            levels: [VecDeque::new(), VecDeque::new(), VecDeque::new()],
        }
    }
}

impl<C: Waiting> CallQueue<C> {
    /// Queues `call` behind every waiting call of its priority or higher.
    pub(super) fn push_back(&mut self, call: C) {
        self.levels[call.priority().rank()].push_back(call);
    }

    /// The call a free slot takes next.
    pub(super) fn front(&self) -> Option<&C> {
        self.levels.iter().find_map(|level| level.front())
    }

    /// Takes the call a free slot takes next.
    pub(super) fn pop_front(&mut self) -> Option<C> {
        self.levels.iter_mut().find_map(|level| level.pop_front())
    }

    /// Keeps only the calls for which `keep` holds, in order.
    pub(super) fn retain(&mut self, mut keep: impl FnMut(&C) -> bool) {
        for level in &mut self.levels {
            level.retain(&mut keep);
        }
    }

    /// Takes every waiting call, in the order a free slot would have taken them.
    pub(super) fn drain_all(&mut self) -> Vec<C> {
        self.levels
            .iter_mut()
            .flat_map(|level| level.drain(..))
            .collect()
    }

    /// How many calls wait.
    pub(super) fn len(&self) -> usize {
        self.levels.iter().map(VecDeque::len).sum()
    }

    /// No call waits.
    pub(super) fn is_empty(&self) -> bool {
        self.levels.iter().all(VecDeque::is_empty)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call::{JobId, Priority};

    struct Call(u64, Priority);

    impl Waiting for Call {
        fn job_id(&self) -> JobId {
            JobId(self.0)
        }
        fn is_live(&self) -> bool {
            true
        }
        fn priority(&self) -> Priority {
            self.1
        }
    }

    /// High calls leave before normal ones, normal before low, each level in arrival order;
    /// draining keeps that order too.
    #[test]
    fn higher_priorities_leave_first_each_in_arrival_order() {
        let mut queue = CallQueue::default();
        let order = [
            (1, Priority::Normal),
            (2, Priority::Low),
            (3, Priority::High),
            (4, Priority::Normal),
            (5, Priority::High),
        ];
        for (id, priority) in order {
            queue.push_back(Call(id, priority));
        }
        assert_eq!(queue.len(), 5);
        assert_eq!(queue.front().map(|c| c.0), Some(3));
        assert_eq!(queue.pop_front().map(|c| c.0), Some(3));
        queue.retain(|c| c.0 != 4);
        let left: Vec<u64> = queue.drain_all().into_iter().map(|c| c.0).collect();
        assert_eq!(left, [5, 1, 2]);
        assert!(queue.is_empty());
    }
}
