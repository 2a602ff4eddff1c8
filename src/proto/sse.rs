//! Server-sent events: the `text/event-stream` encoding, event ids, and a parser that
//! follows the WHATWG HTML "event stream interpretation" (§9.2.6) for tests and the load
//! generator.

use std::fmt;
use std::time::Duration;

use super::limits::{MAX_EVENT_ID_LEN, MAX_TOPICS_PER_STREAM};

/// Appends `retry: <ms>` and a blank line.
pub fn encode_retry(out: &mut Vec<u8>, retry_ms: u64) {
    out.extend_from_slice(b"retry: ");
    out.extend_from_slice(retry_ms.to_string().as_bytes());
    out.extend_from_slice(b"\n\n");
}

/// Appends a comment `: <text>` and a blank line. Clients ignore it; proxies see bytes
/// move, which keeps idle streams open. Line breaks in `text` are replaced by spaces so a
/// comment can never become a field.
pub fn encode_comment(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(b": ");
    out.extend(
        text.bytes()
            .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
    );
    out.extend_from_slice(b"\n\n");
}

/// Appends `id: <id>`.
pub fn encode_id_line(out: &mut Vec<u8>, id: &str) {
    out.extend_from_slice(b"id: ");
    out.extend_from_slice(id.as_bytes());
    out.push(b'\n');
}

/// Appends one whole event: the id line, then [`encode_event_body`].
pub fn encode_event(out: &mut Vec<u8>, id: &str, event: Option<&str>, data: &[u8]) {
    encode_id_line(out, id);
    encode_event_body(out, event, data);
}

/// Appends the part of an event after its id, so one encoded body can be shared by
/// streams whose ids differ: `event: NAME` unless the name is the default `message`, one
/// `data:` line per payload line whatever its ending (`\r\n`, `\r` or `\n`; the client
/// joins them with `\n`), then the blank line that dispatches the event.
pub fn encode_event_body(out: &mut Vec<u8>, event: Option<&str>, data: &[u8]) {
    if let Some(name) = event.filter(|n| *n != "message") {
        debug_assert!(
            !name.contains(['\r', '\n']),
            "event names are validated at publish"
        );
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(name.as_bytes());
        out.push(b'\n');
    }
    out.reserve(data.len() + 8);
    let mut rest = data;
    loop {
        let end = rest.iter().position(|&b| b == b'\n' || b == b'\r');
        out.extend_from_slice(b"data: ");
        match end {
            None => {
                out.extend_from_slice(rest);
                out.push(b'\n');
                break;
            }
            Some(i) => {
                out.extend_from_slice(&rest[..i]);
                out.push(b'\n');
                let skip = if rest[i] == b'\r' && rest.get(i + 1) == Some(&b'\n') {
                    2
                } else {
                    1
                };
                rest = &rest[i + skip..];
            }
        }
    }
    out.push(b'\n');
}

/// The `retry:` hint for one client: uniform in `[base/2, base*3/2)`, chosen by `rand`, so
/// that after a restart clients come back spread over a whole `base` instead of in the
/// same millisecond.
pub fn jittered_retry_ms(base: Duration, rand: u64) -> u64 {
    let base = u64::try_from(base.as_millis())
        .unwrap_or(u64::MAX / 2)
        .max(1);
    base / 2 + rand % base
}

/// A stream's position: per topic, the sequence number of the last event delivered, in
/// the server epoch that numbered them.
///
/// Each topic numbers its events 1, 2, 3, ... (0 = nothing yet) within an epoch, a
/// random `u32` chosen at server start, so an id from before a restart is recognised as
/// stale rather than misread. Text form: `{epoch:08x}-{s1}.{s2}...`, e.g. `1a2b3c4d-17`
/// (one topic) or `1a2b3c4d-17.0.5` (three topics, in the stream's topic order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// The server epoch.
    pub epoch: u32,
    /// Last sequence number per topic of the stream.
    pub seqs: Vec<u64>,
}

impl Cursor {
    /// Parses the text form strictly; anything else (including another server's ids) is
    /// `None`.
    pub fn parse(s: &str) -> Option<Cursor> {
        if s.len() > MAX_EVENT_ID_LEN {
            return None;
        }
        let (epoch, seqs) = s.split_once('-')?;
        if epoch.len() != 8
            || !epoch
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return None;
        }
        let epoch = u32::from_str_radix(epoch, 16).ok()?;
        let mut out = Vec::new();
        for part in seqs.split('.') {
            if part.is_empty()
                || part.len() > 20
                || !part.bytes().all(|b| b.is_ascii_digit())
                || out.len() == MAX_TOPICS_PER_STREAM
            {
                return None;
            }
            out.push(part.parse().ok()?);
        }
        Some(Cursor { epoch, seqs: out })
    }

    /// Appends the text form.
    pub fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.to_string().as_bytes());
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08x}-", self.epoch)?;
        for (i, s) in self.seqs.iter().enumerate() {
            if i > 0 {
                f.write_str(".")?;
            }
            write!(f, "{s}")?;
        }
        Ok(())
    }
}

/// An event as a client sees it after dispatch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedEvent {
    /// The last event id at dispatch time (it persists across events, per the spec).
    pub id: Option<String>,
    /// The event type; `message` when none was given.
    pub event: String,
    /// The data lines joined with `\n`.
    pub data: String,
}

/// An incremental event-stream parser following WHATWG HTML §9.2.6.
#[derive(Debug, Default)]
pub struct EventParser {
    buf: Vec<u8>,
    started: bool,
    /// A `\r` ended the last line; a `\n` right after it belongs to the same break.
    after_cr: bool,
    data: String,
    has_data: bool,
    event: String,
    last_id: Option<String>,
    retry: Option<u64>,
    ready: std::collections::VecDeque<ParsedEvent>,
}

impl EventParser {
    /// A parser at the start of a stream.
    pub fn new() -> EventParser {
        EventParser::default()
    }

    /// Feeds stream bytes in any split.
    pub fn feed(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if self.after_cr {
                self.after_cr = false;
                if b == b'\n' {
                    continue;
                }
            }
            match b {
                b'\r' => {
                    self.after_cr = true;
                    self.line();
                }
                b'\n' => self.line(),
                _ => self.buf.push(b),
            }
        }
    }

    /// The next dispatched event, if any.
    pub fn next_event(&mut self) -> Option<ParsedEvent> {
        self.ready.pop_front()
    }

    /// The last `retry:` value seen.
    pub fn retry(&self) -> Option<u64> {
        self.retry
    }

    /// The last event id (what a client sends as `Last-Event-ID`).
    pub fn last_event_id(&self) -> Option<&str> {
        self.last_id.as_deref()
    }

    fn line(&mut self) {
        let raw = std::mem::take(&mut self.buf);
        let mut line = String::from_utf8_lossy(&raw).into_owned();
        if !self.started {
            self.started = true;
            if let Some(rest) = line.strip_prefix('\u{feff}') {
                line = rest.to_owned();
            }
        }
        if line.is_empty() {
            // Dispatch (§9.2.6): nothing when the data buffer is empty.
            let event = std::mem::take(&mut self.event);
            if self.has_data {
                self.has_data = false;
                let data = std::mem::take(&mut self.data);
                let event = if event.is_empty() {
                    "message".to_owned()
                } else {
                    event
                };
                self.ready.push_back(ParsedEvent {
                    id: self.last_id.clone(),
                    event,
                    data,
                });
            }
            return;
        }
        if line.starts_with(':') {
            return;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line.as_str(), ""),
        };
        match field {
            "event" => self.event = value.to_owned(),
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            "id" if !value.contains('\0') => self.last_id = Some(value.to_owned()),
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                self.retry = value.parse().ok()
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn body(event: Option<&str>, data: &[u8]) -> String {
        let mut out = Vec::new();
        encode_event_body(&mut out, event, data);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn encoding() {
        let mut out = Vec::new();
        encode_retry(&mut out, 3000);
        encode_comment(&mut out, "hb");
        encode_comment(&mut out, "a\r\nb");
        encode_event(&mut out, "0000000a-7", Some("update"), b"x");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "retry: 3000\n\n: hb\n\n: a  b\n\nid: 0000000a-7\nevent: update\ndata: x\n\n"
        );
        assert_eq!(
            body(Some("message"), b"x"),
            "data: x\n\n",
            "default name omitted"
        );
        assert_eq!(body(None, b""), "data: \n\n");
        assert_eq!(body(None, b"a\nb"), "data: a\ndata: b\n\n");
        assert_eq!(body(None, b"a\r\nb"), "data: a\ndata: b\n\n");
        assert_eq!(body(None, b"a\rb"), "data: a\ndata: b\n\n");
        assert_eq!(
            body(None, b"a\r\rb\n"),
            "data: a\ndata: \ndata: b\ndata: \n\n"
        );
        assert_eq!(body(None, b"\n"), "data: \ndata: \n\n");
        assert_eq!(body(None, b" lead"), "data:  lead\n\n");
    }

    fn parse_all(bytes: &[u8]) -> Vec<ParsedEvent> {
        let mut p = EventParser::new();
        p.feed(bytes);
        std::iter::from_fn(|| p.next_event()).collect()
    }

    #[test]
    fn parser_follows_the_spec() {
        let stream = "\u{feff}retry: 1500\n: comment\nid: 1\nevent: a\ndata: x\ndata:  y\n\ndata\n\nid\r\ndata:z\r\rdata: no dispatch without blank line";
        let mut p = EventParser::new();
        p.feed(stream.as_bytes());
        let events: Vec<ParsedEvent> = std::iter::from_fn(|| p.next_event()).collect();
        assert_eq!(
            events,
            [
                ParsedEvent {
                    id: Some("1".into()),
                    event: "a".into(),
                    data: "x\n y".into()
                },
                ParsedEvent {
                    id: Some("1".into()),
                    event: "message".into(),
                    data: "".into()
                },
                ParsedEvent {
                    id: Some("".into()),
                    event: "message".into(),
                    data: "z".into()
                },
            ]
        );
        assert_eq!(p.retry(), Some(1500));
        assert!(
            parse_all(b"event: x\n\n").is_empty(),
            "no data, no dispatch"
        );
        assert_eq!(
            parse_all(b"id: a\0b\ndata: q\n\n")[0].id,
            None,
            "ids with NUL are ignored"
        );
    }

    #[test]
    fn round_trips_and_byte_at_a_time() {
        for data in [
            "",
            "\n",
            "\r\n\r\n",
            "  two leading",
            ":colon",
            "a\rb\nc\r\nd",
            "ünïcødé\n",
        ] {
            let mut out = Vec::new();
            encode_event(&mut out, "00000001-5", Some("e"), data.as_bytes());
            let normalised = data.replace("\r\n", "\n").replace('\r', "\n");
            assert_eq!(
                parse_all(&out),
                [ParsedEvent {
                    id: Some("00000001-5".into()),
                    event: "e".into(),
                    data: normalised
                }]
            );
            let mut p = EventParser::new();
            for b in &out {
                p.feed(std::slice::from_ref(b));
            }
            assert_eq!(
                std::iter::from_fn(|| p.next_event()).collect::<Vec<_>>(),
                parse_all(&out)
            );
        }
    }

    #[test]
    fn cursors() {
        let c = Cursor {
            epoch: 0x1a2b3c4d,
            seqs: vec![17, 0, 5],
        };
        assert_eq!(c.to_string(), "1a2b3c4d-17.0.5");
        assert_eq!(Cursor::parse("1a2b3c4d-17.0.5"), Some(c.clone()));
        let mut out = Vec::new();
        c.write(&mut out);
        assert_eq!(out, b"1a2b3c4d-17.0.5");
        assert_eq!(
            Cursor::parse("00000000-0"),
            Some(Cursor {
                epoch: 0,
                seqs: vec![0]
            })
        );
        let max = format!("ffffffff-{}", u64::MAX);
        assert_eq!(Cursor::parse(&max).map(|c| c.seqs), Some(vec![u64::MAX]));
        let many = |n: usize| format!("00000001-{}", vec!["1"; n].join("."));
        assert!(Cursor::parse(&many(32)).is_some());
        for bad in [
            "",
            "1a2b3c4d",
            "1a2b3c4d-",
            "1a2b3c4d-1..2",
            "1A2B3C4D-1",
            "zz-1",
            "1a2b3c4-1",
            "1a2b3c4d-+1",
            "1a2b3c4d-1.",
            "1a2b3c4d-18446744073709551616",
            &many(33),
        ] {
            assert_eq!(Cursor::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn retry_jitter() {
        let base = Duration::from_secs(3);
        for rand in [0, 1, 2999, 3000, u64::MAX] {
            let r = jittered_retry_ms(base, rand);
            assert!((1500..4500).contains(&r), "{rand} -> {r}");
        }
        // 1000 well-mixed random values over 3000 possible ms: about 850 distinct expected.
        let spread: std::collections::HashSet<u64> = (0..1000u64)
            .map(|i| jittered_retry_ms(base, i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 7))
            .collect();
        assert!(spread.len() > 700, "{} distinct values", spread.len());
        assert_eq!(
            jittered_retry_ms(Duration::ZERO, 5),
            0,
            "zero base stays zero"
        );
    }

    proptest! {
        #[test]
        fn any_payload_survives(data in "(?s).{0,200}", event in "[a-z]{1,10}", seq: u64) {
            let id = Cursor { epoch: 7, seqs: vec![seq] }.to_string();
            let mut out = Vec::new();
            encode_event(&mut out, &id, Some(&event), data.as_bytes());
            let want = data.replace("\r\n", "\n").replace('\r', "\n");
            prop_assert_eq!(parse_all(&out), vec![ParsedEvent { id: Some(id), event, data: want }]);
        }

        #[test]
        fn cursor_round_trip(epoch: u32, seqs in proptest::collection::vec(any::<u64>(), 1..=32)) {
            let c = Cursor { epoch, seqs };
            prop_assert_eq!(Cursor::parse(&c.to_string()), Some(c));
        }
    }
}
