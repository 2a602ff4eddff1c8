//! A topic's numbered log, kept by its owner shard: the last `cap` events with their
//! sequence numbers, for `Last-Event-ID` replay and polling.

use std::collections::VecDeque;
use std::sync::Arc;

use super::Published;

/// A topic's sequence counter and its retained events.
#[derive(Debug)]
pub struct TopicLog {
    /// The last sequence number assigned (0: nothing published yet).
    last: u64,
    events: VecDeque<(u64, Arc<Published>)>,
    cap: usize,
}

/// What a position asks for is no longer (or never was) in the log: the client must
/// resynchronise (`event: reset`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gap;

impl TopicLog {
    /// An empty log that keeps at most `cap` events.
    pub fn new(cap: usize) -> TopicLog {
        TopicLog::starting_after(cap, 0)
    }

    /// An empty log whose first event gets number `last + 1`.
    pub fn starting_after(cap: usize, last: u64) -> TopicLog {
        TopicLog {
            last,
            events: VecDeque::with_capacity(cap.min(64)),
            cap,
        }
    }

    /// The last sequence number assigned.
    pub fn last(&self) -> u64 {
        self.last
    }

    /// Numbers `msg` (1, 2, 3, ...) and keeps it, dropping the oldest past the cap.
    pub fn push(&mut self, msg: Arc<Published>) -> u64 {
        self.last += 1;
        if self.cap > 0 {
            if self.events.len() == self.cap {
                self.events.pop_front();
            }
            self.events.push_back((self.last, msg));
        }
        self.last
    }

    /// The events after position `after`, oldest first; [`Gap`] when some of them are no
    /// longer kept, or `after` is beyond the last event (a position this log never gave).
    pub fn since(&self, after: u64) -> Result<Vec<(u64, Arc<Published>)>, Gap> {
        if after > self.last {
            return Err(Gap);
        }
        if after == self.last {
            return Ok(Vec::new());
        }
        let first = self.events.front().map_or(self.last + 1, |e| e.0);
        if after + 1 < first {
            return Err(Gap);
        }
        let skip = (after + 1 - first) as usize;
        Ok(self.events.iter().skip(skip).cloned().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::http::Topic;

    fn msg(i: u8) -> Arc<Published> {
        Arc::new(Published {
            topic: Topic::new("t").unwrap(),
            text: true,
            payload: vec![i],
            event: None,
            origin: None,
            ack: None,
        })
    }

    fn seqs(r: Result<Vec<(u64, Arc<Published>)>, Gap>) -> Result<Vec<u64>, Gap> {
        r.map(|v| v.into_iter().map(|(s, _)| s).collect())
    }

    #[test]
    fn numbers_keeps_and_replays() {
        let mut log = TopicLog::new(3);
        assert_eq!(seqs(log.since(0)), Ok(vec![]));
        for i in 1..=5 {
            assert_eq!(log.push(msg(i)), u64::from(i));
        }
        // Kept: 3, 4, 5.
        assert_eq!(seqs(log.since(2)), Ok(vec![3, 4, 5]));
        assert_eq!(seqs(log.since(4)), Ok(vec![5]));
        assert_eq!(seqs(log.since(5)), Ok(vec![]));
        assert_eq!(seqs(log.since(1)), Err(Gap), "event 2 is gone");
        assert_eq!(seqs(log.since(0)), Err(Gap));
        assert_eq!(seqs(log.since(6)), Err(Gap), "from the future");
        assert_eq!(log.since(3).unwrap()[0].1.payload, vec![4]);
    }

    #[test]
    fn no_history() {
        let mut log = TopicLog::new(0);
        log.push(msg(1));
        log.push(msg(2));
        assert_eq!(seqs(log.since(2)), Ok(vec![]), "up to date needs nothing");
        assert_eq!(seqs(log.since(1)), Err(Gap));
    }
}
