//! A broadcast over many topics (`--topics N`): which topic each subscriber takes, where
//! each publish goes, how many deliveries that makes, and whether each subscriber got
//! exactly its own topic's messages. Sans-IO: numbers in, numbers out.
//!
//! Subscriber `i` (the connection's index in the run) subscribes to `{TOPIC}-{i mod N}`;
//! publish `p` (the publisher's count of it, the ordinal its payload carries) goes to
//! `{TOPIC}-{p mod N}`. A subscriber of topic `k` must therefore receive publishes
//! `k, k+N, k+2N, ...` and nothing else, in that order (each topic is published on one
//! connection, whose requests the server numbers in order): its per-topic ordinals
//! `p / N` run 0, 1, 2, ... With `N = 1` the topic is `TOPIC` itself, as before topics
//! existed.
#![forbid(unsafe_code)]

/// Topic names are 1 to 128 characters (DESIGN.md, Endpoints).
const MAX_TOPIC: usize = 128;

/// The topics of a run: the URL's topic, and how many there are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    /// The URL's topic; with several, the prefix of each name.
    pub base: String,
    /// How many (at least 1).
    pub n: u64,
}

impl Topics {
    /// `n` topics named after `base`; refused when the longest name would pass the
    /// server's limit.
    pub fn new(base: &str, n: u64) -> Result<Topics, String> {
        let t = Topics {
            base: base.to_owned(),
            n: n.max(1),
        };
        let longest = t.name(t.n - 1).len();
        if longest > MAX_TOPIC {
            return Err(format!(
                "--topics {n}: topic names up to {longest} characters ({base}-{}), the server takes at most {MAX_TOPIC}",
                t.n - 1
            ));
        }
        Ok(t)
    }

    /// The topic of subscriber `index`, or of publish `index`.
    pub fn of(&self, index: u64) -> u64 {
        index % self.n
    }

    /// Topic `k`'s name: the base itself when there is one topic.
    pub fn name(&self, k: u64) -> String {
        if self.n == 1 {
            self.base.clone()
        } else {
            format!("{}-{k}", self.base)
        }
    }

    /// Of `total` subscribers (or publishes), numbered from 0, how many have topic `k`.
    pub fn members(&self, k: u64, total: u64) -> u64 {
        total / self.n + u64::from(k < total % self.n)
    }

    /// Deliveries `published` publishes make to `subscribers` subscribers: the sum over
    /// topics of publishes times subscribers, in closed form.
    pub fn expected(&self, published: u64, subscribers: u64) -> u64 {
        let n = self.n;
        let (pq, pr) = (published / n, published % n);
        let (sq, sr) = (subscribers / n, subscribers % n);
        n * pq * sq + pq * sr + sq * pr + pr.min(sr)
    }

    /// A subscriber's request path: `path` (`/ws/TOPIC`, `/sse/TOPIC`, `/poll/TOPIC`,
    /// with any query) with its topic replaced by topic `k`'s name. `None` when the path
    /// names no single topic (`/sse?topic=a&topic=b`).
    pub fn path(&self, path: &str, k: u64) -> Option<String> {
        let prefix = ["/ws/", "/sse/", "/poll/"]
            .into_iter()
            .find(|p| path.starts_with(p))?;
        let rest = &path[prefix.len()..];
        let end = rest.find(['?', '#']).unwrap_or(rest.len());
        if self.n == 1 {
            return Some(path.to_owned());
        }
        Some(format!("{prefix}{}{}", self.name(k), &rest[end..]))
    }
}

/// The topic named by a subscriber path (`/ws/TOPIC`, `/sse/TOPIC`, `/poll/TOPIC`),
/// without its query; `None` for any other path.
pub fn topic_of_path(path: &str) -> Option<&str> {
    let rest = ["/ws/", "/sse/", "/poll/"]
        .into_iter()
        .find_map(|p| path.strip_prefix(p))?;
    let topic = rest.split(['?', '#']).next().unwrap_or("");
    (!topic.is_empty()).then_some(topic)
}

/// What one subscriber received, checked message by message (12 bytes: a million
/// subscribers pay 12 MB).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Seen {
    /// Messages of its own topic.
    pub got: u32,
    /// The per-topic ordinal expected next.
    next: u32,
    /// A message of another topic, one out of order, or a gap.
    flawed: bool,
}

/// Counters over many subscribers; [`TopicTally::merge`] adds another's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct TopicTally {
    /// Subscribers checked.
    pub subscribers: u64,
    /// Of those, the ones that got every message of their topic, once, in order, and
    /// nothing else.
    pub exact: u64,
    /// Subscribers that got fewer messages of their topic than were published to it.
    pub short: u64,
    /// Subscribers that got more (duplicates).
    pub over: u64,
    /// Messages of another topic than the subscriber's.
    pub wrong_topic: u64,
    /// Jumps forward in a subscriber's per-topic ordinals (messages missed).
    pub gaps: u64,
    /// Messages whose per-topic ordinal was below the next expected (duplicates or
    /// reordering).
    pub out_of_order: u64,
}

impl TopicTally {
    /// Adds `other`'s counters to these.
    pub fn merge(&mut self, other: &TopicTally) {
        self.subscribers += other.subscribers;
        self.exact += other.exact;
        self.short += other.short;
        self.over += other.over;
        self.wrong_topic += other.wrong_topic;
        self.gaps += other.gaps;
        self.out_of_order += other.out_of_order;
    }
}

impl Seen {
    /// A message with publisher ordinal `p` reached a subscriber of topic `k`.
    pub fn observe(&mut self, topics: &Topics, k: u64, p: u64, tally: &mut TopicTally) {
        if topics.of(p) != k {
            tally.wrong_topic += 1;
            self.flawed = true;
            return;
        }
        self.got = self.got.saturating_add(1);
        let ord = p / topics.n;
        let next = u64::from(self.next);
        if ord < next {
            tally.out_of_order += 1;
            self.flawed = true;
            return;
        }
        if ord > next {
            tally.gaps += 1;
            self.flawed = true;
        }
        self.next = u32::try_from(ord + 1).unwrap_or(u32::MAX);
    }

    /// At the end, with `published` publishes in all: counts this subscriber of topic
    /// `k` as exact, short or over.
    pub fn end(&self, topics: &Topics, k: u64, published: u64, tally: &mut TopicTally) {
        let want = topics.members(k, published);
        let got = u64::from(self.got);
        tally.subscribers += 1;
        if got < want {
            tally.short += 1;
        } else if got > want {
            tally.over += 1;
        } else if !self.flawed {
            tally.exact += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_is_the_sum_over_topics() {
        for n in [1, 2, 3, 7, 10] {
            let t = Topics::new("t", n).unwrap();
            for published in 0..40 {
                for subscribers in 0..30 {
                    let brute: u64 = (0..n)
                        .map(|k| t.members(k, published) * t.members(k, subscribers))
                        .sum();
                    assert_eq!(
                        t.expected(published, subscribers),
                        brute,
                        "n {n}, published {published}, subscribers {subscribers}"
                    );
                }
            }
        }
        let one = Topics::new("t", 1).unwrap();
        assert_eq!(
            one.expected(7, 2000),
            14_000,
            "one topic: published x subscribers"
        );
    }

    #[test]
    fn names_and_paths() {
        let one = Topics::new("room", 1).unwrap();
        assert_eq!(one.name(0), "room");
        assert_eq!(one.path("/ws/room?x=1", 0).as_deref(), Some("/ws/room?x=1"));
        let t = Topics::new("room", 20).unwrap();
        assert_eq!(t.name(13), "room-13");
        assert_eq!(t.path("/ws/room", 13).as_deref(), Some("/ws/room-13"));
        assert_eq!(
            t.path("/sse/room?x=1", 0).as_deref(),
            Some("/sse/room-0?x=1")
        );
        assert_eq!(
            t.path("/poll/room?wait=1s", 19).as_deref(),
            Some("/poll/room-19?wait=1s")
        );
        assert_eq!(t.path("/sse?topic=a&topic=b", 1), None);
        assert_eq!(topic_of_path("/sse/news?x=1"), Some("news"));
        assert_eq!(topic_of_path("/ws/"), None);
        assert_eq!(topic_of_path("/echo"), None);
        let long = "x".repeat(120);
        assert!(Topics::new(&long, 10_000_000).is_ok(), "120 + 8 characters");
        let err = Topics::new(&long, 100_000_000).unwrap_err();
        assert!(err.starts_with("--topics 100000000: "), "{err}");
    }

    #[test]
    fn members_split_round_robin() {
        let t = Topics::new("t", 20).unwrap();
        // 200 subscribers over 20 topics: 10 each; 45 publishes: 3 to topics 0-4, 2 after.
        assert!((0..20).all(|k| t.members(k, 200) == 10));
        assert_eq!(t.members(4, 45), 3);
        assert_eq!(t.members(5, 45), 2);
        assert_eq!((0..20).map(|k| t.members(k, 45)).sum::<u64>(), 45);
    }

    #[test]
    fn a_subscriber_must_get_its_topic_exactly() {
        let t = Topics::new("t", 4).unwrap();
        let run = |ps: &[u64], published: u64| {
            let mut seen = Seen::default();
            let mut tally = TopicTally::default();
            for &p in ps {
                seen.observe(&t, 1, p, &mut tally);
            }
            seen.end(&t, 1, published, &mut tally);
            tally
        };
        let exact = run(&[1, 5, 9], 12);
        assert_eq!((exact.subscribers, exact.exact), (1, 1), "{exact:?}");
        // Publish 9 was the 10th: topic 1 got 1, 5 and 9 of 10 publishes; 13 is next.
        assert_eq!(run(&[1, 5, 9], 10).exact, 1);
        let short = run(&[1, 9], 12);
        assert_eq!(
            (short.short, short.gaps, short.exact),
            (1, 1, 0),
            "{short:?}"
        );
        let wrong = run(&[1, 2, 5, 9], 12);
        assert_eq!((wrong.wrong_topic, wrong.exact), (1, 0), "{wrong:?}");
        let twice = run(&[1, 5, 5, 9], 12);
        assert_eq!(
            (twice.over, twice.out_of_order, twice.exact),
            (1, 1, 0),
            "{twice:?}"
        );
        let swapped = run(&[1, 9, 5], 12);
        assert_eq!((swapped.out_of_order, swapped.exact), (1, 0), "{swapped:?}");
    }
}
