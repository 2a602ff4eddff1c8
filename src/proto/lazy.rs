//! A queue that holds memory only while it holds something.

use std::collections::VecDeque;

/// A `VecDeque` allocated while it holds something: 8 bytes inline, where a `VecDeque`
/// costs 32, and no heap once given back ([`LazyDeque::release`]). For the queues every
/// connection has and an idle one never uses (its events for the driver, its outbox's
/// chunks): a million idle connections do not pay for them.
#[derive(Debug)]
#[allow(clippy::box_collection)] // on purpose: 8 bytes inline instead of 32
pub struct LazyDeque<T>(Option<Box<VecDeque<T>>>);

impl<T> Default for LazyDeque<T> {
    fn default() -> Self {
        LazyDeque(None)
    }
}

impl<T> LazyDeque<T> {
    /// The queue, allocated if it was not.
    pub fn get(&mut self) -> &mut VecDeque<T> {
        self.0.get_or_insert_default()
    }

    /// Items queued.
    pub fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |q| q.len())
    }

    /// Nothing queued?
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Queues `item` last.
    pub fn push_back(&mut self, item: T) {
        self.get().push_back(item);
    }

    /// The first item, taken out (the memory stays until [`LazyDeque::release`]).
    pub fn pop_front(&mut self) -> Option<T> {
        self.0.as_mut()?.pop_front()
    }

    /// The last item.
    pub fn back_mut(&mut self) -> Option<&mut T> {
        self.0.as_mut()?.back_mut()
    }

    /// The items, first to last.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.0.iter().flat_map(|q| q.iter())
    }

    /// Gives the memory back if nothing is queued.
    pub fn release(&mut self) {
        if self.is_empty() {
            self.0 = None;
        }
    }

    /// Holds memory?
    pub fn is_allocated(&self) -> bool {
        self.0.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::LazyDeque;

    #[test]
    fn memory_only_while_used() {
        let mut q = LazyDeque::default();
        assert_eq!(std::mem::size_of_val(&q), 8);
        assert!(!q.is_allocated());
        q.push_back(1);
        q.push_back(2);
        assert_eq!(
            (q.len(), q.iter().copied().collect::<Vec<_>>()),
            (2, vec![1, 2])
        );
        q.release();
        assert!(q.is_allocated(), "kept while not empty");
        assert_eq!(
            (q.pop_front(), q.pop_front(), q.pop_front()),
            (Some(1), Some(2), None)
        );
        q.release();
        assert!(!q.is_allocated());
        assert_eq!(q.back_mut(), None);
    }
}
