//! The exactness check of one event-stream client over its whole life, across
//! reconnects: sans-IO, events in, verdicts out.
//!
//! A single-topic stream's ids are `EPOCH-SEQ` (8 hex digits, a dash, the decimal
//! sequence number; `proto::sse::Cursor`). Within one epoch, a client that resumes with
//! `Last-Event-ID` must see every sequence number exactly once, in increasing order,
//! from its first event on: the next event is always `last + 1`. Anything else is
//! counted: a jump forward (a gap: events lost), a number at or below the last one (a
//! duplicate), `event: reset` (the server lost the position), an epoch that changes
//! without a reset. A client with any of these is not exact.
//!
//! A cluster's ids (`crate::cluster`) only increase, with holes between them, so the
//! next event is not `last + 1` there: when the publisher numbered its payloads (an
//! ordinal, see `worker::traffic`), gaps are counted on the ordinals instead, the ids
//! still give the order and the duplicates.
//!
//! Multi-topic ids (`EPOCH-S1.S2...`) are not checked (counted as unparsed). A broadcast
//! over many topics (`--topics`) gives each stream one topic of its own: each is judged
//! against its own topic's last position ([`Ends::per_topic`]), and the ordinals it is
//! given are its topic's (`worker::traffic`).
#![forbid(unsafe_code)]

/// A position in a single-topic stream: epoch and sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Pos {
    /// The server epoch that numbered the event.
    pub epoch: u32,
    /// The topic's sequence number.
    pub seq: u64,
}

impl Pos {
    /// Parses a single-topic event id: exactly 8 lowercase hex digits, `-`, a canonical
    /// decimal `u64`. Anything else (another server's ids, a multi-topic id) is `None`.
    pub fn parse(id: &str) -> Option<Pos> {
        let (epoch, seq) = id.split_once('-')?;
        let hex = |b: u8| b.is_ascii_digit() || (b'a'..=b'f').contains(&b);
        if epoch.len() != 8 || !epoch.bytes().all(hex) {
            return None;
        }
        let canonical = !seq.is_empty()
            && seq.bytes().all(|b| b.is_ascii_digit())
            && (seq == "0" || !seq.starts_with('0'));
        if !canonical {
            return None;
        }
        Some(Pos {
            epoch: u32::from_str_radix(epoch, 16).ok()?,
            seq: seq.parse().ok()?,
        })
    }
}

/// Counters over many clients; [`Tally::merge`] adds another's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Tally {
    /// Events checked (`reset` not included).
    pub events: u64,
    /// Jumps forward within an epoch (each one lost at least one event).
    pub gaps: u64,
    /// Events the gaps skipped, in total.
    pub missed: u64,
    /// Events at or below the last sequence number seen, within an epoch.
    pub duplicates: u64,
    /// `event: reset`: the server no longer knew the position.
    pub resets: u64,
    /// The epoch changed without a reset (a server restart the stream did not announce).
    pub epoch_changes: u64,
    /// Events whose id is not a single-topic `EPOCH-SEQ` (not checked).
    pub unparsed: u64,
}

impl Tally {
    /// Adds `other`'s counters to these.
    pub fn merge(&mut self, other: &Tally) {
        self.events += other.events;
        self.gaps += other.gaps;
        self.missed += other.missed;
        self.duplicates += other.duplicates;
        self.resets += other.resets;
        self.epoch_changes += other.epoch_changes;
        self.unparsed += other.unparsed;
    }
}

/// One client's stream, over all its connections.
///
/// Call [`Sequence::observe`] with every event the client dispatches, in order, whatever
/// connection it came on; [`Sequence::end`] says where the client stands.
#[derive(Debug, Clone, Default)]
pub struct Sequence {
    last: Option<Pos>,
    /// The publisher's ordinal of the last event, when payloads carry one.
    last_ordinal: Option<u64>,
    flawed: bool,
}

/// Where one client stood at the end of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct End {
    /// The last position it saw (`None`: no event at all).
    pub last: Option<Pos>,
    /// No gap, duplicate, reset or unannounced epoch change in its whole life.
    pub clean: bool,
}

impl Sequence {
    /// A client that has seen nothing yet.
    pub fn new() -> Sequence {
        Sequence::default()
    }

    /// Checks one dispatched event (`event` its type, `id` the last event id at
    /// dispatch, `ordinal` the publisher's count in its payload if any) and counts what
    /// it finds in `tally`.
    pub fn observe(
        &mut self,
        event: &str,
        id: Option<&str>,
        ordinal: Option<u64>,
        tally: &mut Tally,
    ) {
        let pos = id.and_then(Pos::parse);
        if event == "reset" {
            // The position before what the server still retains: the next event follows
            // it (WHATWG: a reset's id is what the client resumes from).
            tally.resets += 1;
            self.flawed = true;
            if pos.is_some() {
                self.last = pos;
            }
            self.last_ordinal = None;
            return;
        }
        tally.events += 1;
        let Some(pos) = pos else {
            tally.unparsed += 1;
            return;
        };
        match self.last {
            None => {}
            Some(last) if last.epoch != pos.epoch => {
                tally.epoch_changes += 1;
                self.flawed = true;
            }
            Some(last) if pos.seq <= last.seq => {
                tally.duplicates += 1;
                self.flawed = true;
                // The position does not move back: the next new event is still last + 1.
                return;
            }
            Some(last) => {
                let skipped = match (ordinal, self.last_ordinal) {
                    (Some(o), Some(lo)) => o.saturating_sub(lo + 1),
                    (Some(_), None) => 0,
                    (None, _) => pos.seq - last.seq - 1,
                };
                if skipped > 0 {
                    tally.gaps += 1;
                    tally.missed += skipped;
                    self.flawed = true;
                }
            }
        }
        self.last = Some(pos);
        self.last_ordinal = ordinal;
    }

    /// Where the client stands now.
    pub fn end(&self) -> End {
        End {
            last: self.last,
            clean: !self.flawed,
        }
    }
}

/// Every client's end, summed up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Ends {
    /// Clients checked.
    pub clients: u64,
    /// Clients that saw no event at all.
    pub silent: u64,
    /// The last sequence number: the highest any client reached, in the epoch most
    /// clients ended in.
    pub last_seq: Option<u64>,
    /// Clients that did not reach it.
    pub behind: u64,
    /// Clients whose whole life was contiguous and that reached it.
    pub exact: u64,
}

impl Ends {
    /// Sums up `ends` of clients of several topics, each `(topic, end)`: each topic's
    /// clients against that topic's last position. The last sequence number is only
    /// given with one topic.
    pub fn per_topic(mut ends: Vec<(u32, End)>) -> Ends {
        ends.sort_unstable_by_key(|(topic, _)| *topic);
        let mut sum = Ends::default();
        let mut topics = 0;
        for group in ends.chunk_by(|a, b| a.0 == b.0) {
            let one: Vec<End> = group.iter().map(|(_, e)| *e).collect();
            let e = Ends::of(&one);
            topics += 1;
            sum.clients += e.clients;
            sum.silent += e.silent;
            sum.behind += e.behind;
            sum.exact += e.exact;
            sum.last_seq = e.last_seq;
        }
        if topics > 1 {
            sum.last_seq = None;
        }
        sum
    }

    /// Sums up `ends`.
    pub fn of(ends: &[End]) -> Ends {
        let mut by_epoch: std::collections::HashMap<u32, (u64, u64)> = Default::default();
        for p in ends.iter().filter_map(|e| e.last) {
            let (n, max) = by_epoch.entry(p.epoch).or_default();
            *n += 1;
            *max = (*max).max(p.seq);
        }
        // The epoch most clients ended in (ties: the lower epoch value, for a stable
        // answer).
        let last = by_epoch
            .iter()
            .max_by_key(|(epoch, (n, _))| (*n, std::cmp::Reverse(**epoch)))
            .map(|(&epoch, &(_, seq))| Pos { epoch, seq });
        let at_last = |e: &&End| e.last.is_some() && e.last == last;
        Ends {
            clients: ends.len() as u64,
            silent: ends.iter().filter(|e| e.last.is_none()).count() as u64,
            last_seq: last.map(|p| p.seq),
            behind: ends.iter().filter(|e| !at_last(e)).count() as u64,
            exact: ends.iter().filter(|e| e.clean && at_last(e)).count() as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(ids: &[(&str, &str)]) -> (Tally, End) {
        let mut s = Sequence::new();
        let mut t = Tally::default();
        for (event, id) in ids {
            s.observe(event, Some(id), None, &mut t);
        }
        (t, s.end())
    }

    #[test]
    fn ordinals_count_gaps_where_ids_have_holes() {
        // Cluster ids: increasing, never 1 apart; the payloads' ordinals are.
        let mut s = Sequence::new();
        let mut t = Tally::default();
        for (seq, ord) in [(1000, 0), (5000, 1), (9000, 2), (20000, 4)] {
            s.observe(
                "message",
                Some(&format!("72656469-{seq}")),
                Some(ord),
                &mut t,
            );
        }
        assert_eq!((t.events, t.gaps, t.missed), (4, 1, 1), "ordinal 3 missing");
        assert!(!s.end().clean);
        let mut s = Sequence::new();
        let mut t = Tally::default();
        s.observe("message", Some("72656469-1000"), Some(7), &mut t);
        s.observe("reset", Some("72656469-4999"), None, &mut t);
        s.observe("message", Some("72656469-5000"), Some(12), &mut t);
        s.observe("message", Some("72656469-6000"), Some(13), &mut t);
        s.observe("message", Some("72656469-6000"), Some(13), &mut t);
        assert_eq!((t.gaps, t.resets, t.duplicates), (0, 1, 1));
    }

    #[test]
    fn ids() {
        assert_eq!(
            Pos::parse("1a2b3c4d-9437185"),
            Some(Pos {
                epoch: 0x1a2b_3c4d,
                seq: 9_437_185
            })
        );
        for bad in [
            "1a2b3c4d-1.2",
            "1A2B3C4D-1",
            "1a2b3c4-1",
            "1a2b3c4d-",
            "1a2b3c4d-01",
            "0",
            "x",
            "1a2b3c4d-99999999999999999999999",
        ] {
            assert_eq!(Pos::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn contiguous_is_clean() {
        let (t, end) = run(&[("message", "0000000a-5"), ("message", "0000000a-6")]);
        assert_eq!(
            (t.events, t.gaps, t.duplicates, t.resets),
            (2, 0, 0, 0),
            "{t:?}"
        );
        assert_eq!(
            end,
            End {
                last: Some(Pos { epoch: 10, seq: 6 }),
                clean: true
            }
        );
    }

    #[test]
    fn every_flaw_is_counted() {
        let (t, end) = run(&[
            ("message", "0000000a-5"),
            ("message", "0000000a-8"), // gap: 6, 7 missed
            ("message", "0000000a-8"), // duplicate
            ("message", "0000000a-7"), // duplicate (older)
            ("message", "0000000a-9"), // follows 8: fine
            ("reset", "0000000b-100"), // new epoch, announced
            ("message", "0000000b-101"),
            ("message", "0000000c-1"), // new epoch, not announced
            ("message", "x"),
        ]);
        assert_eq!(
            t,
            Tally {
                events: 8,
                gaps: 1,
                missed: 2,
                duplicates: 2,
                resets: 1,
                epoch_changes: 1,
                unparsed: 1,
            }
        );
        assert!(!end.clean);
        assert_eq!(end.last, Some(Pos { epoch: 12, seq: 1 }));
    }

    #[test]
    fn ends_name_the_last_position() {
        let at = |seq, clean| End {
            last: Some(Pos { epoch: 7, seq }),
            clean,
        };
        let ends = [
            at(10, true),
            at(10, false),
            at(9, true),
            End {
                last: None,
                clean: true,
            },
            End {
                last: Some(Pos { epoch: 1, seq: 50 }),
                clean: true,
            },
        ];
        assert_eq!(
            Ends::of(&ends),
            Ends {
                clients: 5,
                silent: 1,
                last_seq: Some(10),
                behind: 3,
                exact: 1,
            }
        );
        assert_eq!(Ends::of(&[]).last_seq, None);
        // Two topics, each with its own numbers: every client at its own topic's end.
        let per = Ends::per_topic(vec![(1, at(3, true)), (0, at(10, true)), (1, at(3, true))]);
        assert_eq!(
            (per.clients, per.exact, per.behind, per.last_seq),
            (3, 3, 0, None)
        );
        let one = Ends::per_topic(ends.iter().map(|e| (0, *e)).collect());
        assert_eq!(one, Ends::of(&ends));
    }
}
