//! Server-sent events (WHATWG HTML §9.2): the `text/event-stream` encoding, the event
//! ids that make replay exact, and a parser that follows the spec's "event stream
//! interpretation" (§9.2.6), for tests and the load generator.
//!
//! A stream as [`encode_retry`], [`encode_event`] and [`encode_comment`] write it:
//!
//! ```text
//! retry: 2871            <- first: the reconnect delay, jittered per client
//!
//! id: 1a2b3c4d-17        <- the stream's position after this event (see Cursor)
//! event: update          <- omitted for the default type "message"
//! data: first line       <- one data line per payload line
//! data: second line
//!                        <- the blank line dispatches the event
//! : hb                   <- heartbeat comment, ignored by clients
//!
//! ```
//!
//! Event bodies are encoded once per published event ([`encode_event_body`]) and shared
//! by every stream; only the short id line ([`encode_id_line`]) is per stream, since
//! each stream's id carries its position in all of its topics.

use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

use super::limits::{MAX_EVENT_ID_LEN, MAX_TOPICS_PER_STREAM};

/// Appends `retry: <ms>` and a blank line: the client's reconnection time (§9.2.6
/// "retry" field), sent first on every stream.
pub fn encode_retry(out: &mut Vec<u8>, retry_ms: u64) {
    out.extend_from_slice(b"retry: ");
    push_decimal(out, retry_ms);
    out.extend_from_slice(b"\n\n");
}

/// Appends a comment `: <text>` (`:` alone when `text` is empty) and a blank line.
/// Clients ignore comments; proxies see bytes move, which keeps a quiet stream open,
/// and a client notices a dead stream when they stop.
///
/// `text` must be one line: a line break would end the comment and make the rest a
/// field. Debug builds assert it; release builds drop the line breaks.
pub fn encode_comment(out: &mut Vec<u8>, text: &str) {
    out.push(b':');
    if !text.is_empty() {
        out.push(b' ');
        push_one_line(out, text);
    }
    out.extend_from_slice(b"\n\n");
}

/// Appends `id: <id>`, the first line of an event; the event body follows
/// ([`encode_event_body`]). `id` must be one line and have no NUL (a client ignores
/// such an id, §9.2.6): ours are [`Cursor`]s.
pub fn encode_id_line(out: &mut Vec<u8>, id: &str) {
    debug_assert!(!id.contains('\0'), "a client ignores an id with NUL");
    out.extend_from_slice(b"id: ");
    push_one_line(out, id);
    out.push(b'\n');
}

/// Appends one whole event: [`encode_id_line`], then [`encode_event_body`].
pub fn encode_event(out: &mut Vec<u8>, id: &str, event: Option<&str>, data: &[u8]) {
    encode_id_line(out, id);
    encode_event_body(out, event, data);
}

/// Appends the part of an event after its id line, so one encoded body can be shared by
/// many streams whose ids differ:
///
/// - `event: NAME`, unless the name is absent, empty or `message`: the type a client
///   assumes without the line;
/// - one `data: LINE` per payload line, splitting at `\r\n`, `\r` and `\n` alike (the
///   client would split there too), so the client, which joins data lines with `\n`,
///   gets the payload back with its line breaks as `\n`. An empty payload is one empty
///   data line, and a payload ending in a line break gets a final empty data line, so
///   that trailing break survives;
/// - the blank line that dispatches the event.
///
/// The name must be one line (validated at publish); debug builds assert it, release
/// builds drop line breaks. The payload may be any bytes; a client decodes it as UTF-8.
pub fn encode_event_body(out: &mut Vec<u8>, event: Option<&str>, data: &[u8]) {
    if let Some(name) = event.filter(|n| !n.is_empty() && *n != "message") {
        out.extend_from_slice(b"event: ");
        push_one_line(out, name);
        out.push(b'\n');
    }
    // Each line costs 7 bytes of framing; one reserve for the common short payload.
    out.reserve(data.len() + 8);
    let mut rest = data;
    loop {
        out.extend_from_slice(b"data: ");
        match rest.iter().position(|&b| b == b'\n' || b == b'\r') {
            None => {
                out.extend_from_slice(rest);
                out.push(b'\n');
                break;
            }
            Some(i) => {
                out.extend_from_slice(&rest[..i]);
                out.push(b'\n');
                let crlf = rest[i] == b'\r' && rest.get(i + 1) == Some(&b'\n');
                rest = &rest[i + 1 + usize::from(crlf)..];
            }
        }
    }
    out.push(b'\n');
}

/// The `retry:` hint for one client: uniform in `[base/2, base*3/2)` milliseconds, so
/// that after a server restart the clients come back spread over a whole `base` rather
/// than in the same millisecond (the thundering herd `ringpush load --scenario storm`
/// measures).
///
/// `rand` is the caller's per-client randomness (proto reads no entropy source). It is mixed
/// first, so a small or sequential value (a `u32` seed, a connection counter) spreads
/// as well as a full random `u64`.
pub fn jittered_retry_ms(base: Duration, rand: u64) -> u64 {
    // The cap keeps base/2 + (base - 1) within u64.
    let base = u64::try_from(base.as_millis())
        .unwrap_or(u64::MAX)
        .clamp(1, u64::MAX / 2);
    base / 2 + super::rand::mix(rand) % base
}

/// Appends `text` minus any `\r` or `\n`, which would end the line early and turn the
/// rest into a field of the attacker's choosing. Debug builds assert there is none:
/// callers validate first, so one here is a bug.
fn push_one_line(out: &mut Vec<u8>, text: &str) {
    debug_assert!(
        !text.contains(['\r', '\n']),
        "event-stream values are one line: {text:?}"
    );
    push_without_breaks(out, text);
}

fn push_without_breaks(out: &mut Vec<u8>, text: &str) {
    out.extend(text.bytes().filter(|&b| b != b'\r' && b != b'\n'));
}

fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// A stream's position: per topic of the stream, the sequence number of the last event
/// delivered, in the server epoch that numbered them. It is the event id a client sends
/// back as `Last-Event-ID`, so a reconnect resumes every topic exactly.
///
/// Each topic numbers its events 1, 2, 3, ... (0 = nothing seen yet) within an epoch: a
/// random `u32` chosen at server start, so an id from before a restart is recognised as
/// stale instead of being misread as a position in the new numbering.
///
/// Text form: `{epoch:08x}-{s1}.{s2}...{sn}`, lowercase hex and decimal without leading
/// zeros, seqs in the stream's topic order: `1a2b3c4d-17` (one topic), `1a2b3c4d-17.0.5`
/// (three). At most 9 + 32 * 21 = 681 bytes, under [`MAX_EVENT_ID_LEN`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Cursor {
    /// The server epoch.
    pub epoch: u32,
    /// Last sequence number per topic of the stream.
    pub seqs: Vec<u64>,
}

impl Cursor {
    /// Parses the text form strictly: exactly what [`Cursor::write`] produces (8 lowercase
    /// hex digits, `-`, 1 to [`MAX_TOPICS_PER_STREAM`] canonical decimal `u64`s joined
    /// by `.`). Anything else, including ids of another server, is `None`: an unknown
    /// position, which the caller answers with `event: reset`.
    pub fn parse(s: &str) -> Option<Cursor> {
        if s.len() > MAX_EVENT_ID_LEN {
            return None;
        }
        let (epoch, seqs) = s.split_once('-')?;
        if epoch.len() != 8
            || !epoch
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return None;
        }
        let epoch = u32::from_str_radix(epoch, 16).ok()?;
        let mut out = Vec::new();
        for part in seqs.split('.') {
            let canonical = !part.is_empty()
                && part.bytes().all(|b| b.is_ascii_digit())
                && (part == "0" || !part.starts_with('0'));
            if !canonical || out.len() == MAX_TOPICS_PER_STREAM {
                return None;
            }
            out.push(part.parse().ok()?);
        }
        Some(Cursor { epoch, seqs: out })
    }

    /// Appends the text form; no allocation (this runs once per event per stream).
    pub fn write(&self, out: &mut Vec<u8>) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        for shift in (0..8).rev() {
            out.push(HEX[(self.epoch >> (shift * 4)) as usize & 0xf]);
        }
        out.push(b'-');
        for (i, &s) in self.seqs.iter().enumerate() {
            if i > 0 {
                out.push(b'.');
            }
            push_decimal(out, s);
        }
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

/// An event as a browser's `EventSource` would deliver it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedEvent {
    /// The last event id at dispatch (`MessageEvent.lastEventId`). It persists across
    /// events until an `id` field changes it; `None` if the stream never set one,
    /// `Some("")` after an empty `id` field reset it.
    pub id: Option<String>,
    /// The event type; `message` when no `event` field was given.
    pub event: String,
    /// The data lines joined with `\n`.
    pub data: String,
}

/// An incremental `text/event-stream` parser, WHATWG HTML §9.2.6 "Interpreting an event
/// stream": bytes in, in any split ([`EventParser::feed`]); dispatched events out
/// ([`EventParser::next_event`]).
///
/// Follows the spec exactly: lines end at `\r\n`, `\r` or `\n` (even when the `\r` and
/// `\n` arrive in different feeds); one UTF-8 byte order mark at the very start is
/// skipped; invalid UTF-8 becomes U+FFFD; lines starting with `:` are comments; a field
/// is `name:value` with one leading space of the value removed, or a whole line as the
/// name with an empty value; unknown fields are ignored; a blank line dispatches, unless
/// no `data` field came since the last dispatch; an event cut off by the end of the
/// stream is never dispatched.
///
/// # Warning
/// A line is buffered until it ends, without a cap: meant for streams from our own
/// server (tests, the load generator), not untrusted ones.
#[derive(Debug, Default)]
pub struct EventParser {
    /// The current, unterminated line.
    line: Vec<u8>,
    /// At least one line was seen: the byte order mark can only come before.
    started: bool,
    /// The last line ended with `\r`: a `\n` right after it belongs to the same break.
    after_cr: bool,
    /// The data buffer, and whether any `data` field has been seen (the spec's buffer
    /// ends with `\n` after every data line; tracking the first line avoids trimming).
    data: String,
    has_data: bool,
    /// The event type buffer.
    event: String,
    /// The last event ID buffer: set by `id` fields, copied to `last_event_id` by a
    /// blank line.
    id_buffer: Option<String>,
    /// The event source's last event ID string: what a reconnect sends.
    last_event_id: Option<String>,
    retry: Option<u64>,
    ready: VecDeque<ParsedEvent>,
}

impl EventParser {
    /// A parser at the start of a stream.
    pub fn new() -> EventParser {
        EventParser::default()
    }

    /// Feeds the next bytes of the stream, split anywhere.
    pub fn feed(&mut self, mut bytes: &[u8]) {
        while let Some(&first) = bytes.first() {
            if std::mem::take(&mut self.after_cr) && first == b'\n' {
                bytes = &bytes[1..];
                continue;
            }
            match bytes.iter().position(|&b| b == b'\n' || b == b'\r') {
                None => {
                    self.line.extend_from_slice(bytes);
                    return;
                }
                Some(i) => {
                    self.line.extend_from_slice(&bytes[..i]);
                    self.after_cr = bytes[i] == b'\r';
                    bytes = &bytes[i + 1..];
                    self.end_line();
                }
            }
        }
    }

    /// The next dispatched event, oldest first.
    pub fn next_event(&mut self) -> Option<ParsedEvent> {
        self.ready.pop_front()
    }

    /// The reconnection time set by the last valid `retry` field, in milliseconds.
    pub fn retry(&self) -> Option<u64> {
        self.retry
    }

    /// The event source's last event ID: what a reconnecting client sends as
    /// `Last-Event-ID`. Only a blank line makes an `id` field count, so an event cut off
    /// by a dropped connection does not move it.
    pub fn last_event_id(&self) -> Option<&str> {
        self.last_event_id.as_deref()
    }

    fn end_line(&mut self) {
        let mut raw = std::mem::take(&mut self.line);
        let mut bytes = raw.as_slice();
        if !std::mem::replace(&mut self.started, true) {
            bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
        }
        let line = String::from_utf8_lossy(bytes);
        if line.is_empty() {
            self.dispatch();
        } else if !line.starts_with(':') {
            let (field, value) = match line.split_once(':') {
                Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                None => (&*line, ""),
            };
            self.field(field, value);
        }
        raw.clear();
        self.line = raw;
    }

    /// §9.2.6 "process the field".
    fn field(&mut self, field: &str, value: &str) {
        match field {
            "event" => value.clone_into(&mut self.event),
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            "id" if !value.contains('\0') => self.id_buffer = Some(value.to_owned()),
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                // Digits beyond u64 are still "an integer"; the longest wait it is.
                self.retry = Some(value.parse().unwrap_or(u64::MAX));
            }
            _ => {}
        }
    }

    /// §9.2.6 "dispatch the event".
    fn dispatch(&mut self) {
        if self.last_event_id != self.id_buffer {
            self.last_event_id.clone_from(&self.id_buffer);
        }
        let event = std::mem::take(&mut self.event);
        if !std::mem::take(&mut self.has_data) {
            return;
        }
        self.ready.push_back(ParsedEvent {
            id: self.last_event_id.clone(),
            event: if event.is_empty() {
                "message".to_owned()
            } else {
                event
            },
            data: std::mem::take(&mut self.data),
        });
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

    fn encoded(f: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut out = Vec::new();
        f(&mut out);
        String::from_utf8(out).unwrap()
    }

    fn parse_all(bytes: &[u8]) -> Vec<ParsedEvent> {
        let mut p = EventParser::new();
        p.feed(bytes);
        std::iter::from_fn(|| p.next_event()).collect()
    }

    fn event(id: Option<&str>, event: &str, data: &str) -> ParsedEvent {
        ParsedEvent {
            id: id.map(str::to_owned),
            event: event.to_owned(),
            data: data.to_owned(),
        }
    }

    #[test]
    fn retry_and_comments() {
        assert_eq!(encoded(|o| encode_retry(o, 3000)), "retry: 3000\n\n");
        assert_eq!(encoded(|o| encode_retry(o, 0)), "retry: 0\n\n");
        assert_eq!(
            encoded(|o| encode_retry(o, u64::MAX)),
            "retry: 18446744073709551615\n\n"
        );
        assert_eq!(encoded(|o| encode_comment(o, "hb")), ": hb\n\n");
        assert_eq!(encoded(|o| encode_comment(o, "")), ":\n\n");
        assert_eq!(encoded(|o| encode_comment(o, " x: y")), ":  x: y\n\n");
        let mut out = b"keep".to_vec();
        encode_retry(&mut out, 1);
        assert_eq!(out, b"keepretry: 1\n\n", "appends");
    }

    #[test]
    fn line_breaks_are_dropped_from_one_line_values() {
        let mut out = Vec::new();
        push_without_breaks(&mut out, "a\r\nb\rc\nd");
        assert_eq!(out, b"abcd");
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "one line")]
    fn a_line_break_in_a_comment_is_a_bug() {
        encode_comment(&mut Vec::new(), "a\nb");
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "one line")]
    fn a_line_break_in_an_event_name_is_a_bug() {
        encode_event_body(&mut Vec::new(), Some("a\rb"), b"");
    }

    #[test]
    fn event_encoding() {
        assert_eq!(
            encoded(|o| encode_event(o, "0000000a-7", Some("update"), b"x")),
            "id: 0000000a-7\nevent: update\ndata: x\n\n"
        );
        assert_eq!(
            encoded(|o| encode_id_line(o, "1a2b3c4d-1.2")),
            "id: 1a2b3c4d-1.2\n"
        );
        let mut whole = Vec::new();
        encode_event(&mut whole, "i", Some("e"), b"a\nb");
        let mut parts = Vec::new();
        encode_id_line(&mut parts, "i");
        encode_event_body(&mut parts, Some("e"), b"a\nb");
        assert_eq!(whole, parts, "an event is its id line and its body");

        for default in [None, Some("message"), Some("")] {
            assert_eq!(body(default, b"x"), "data: x\n\n", "{default:?}");
        }
        assert_eq!(body(Some("Message"), b"x"), "event: Message\ndata: x\n\n");
        assert_eq!(body(Some(" sp"), b"x"), "event:  sp\ndata: x\n\n");
    }

    #[test]
    fn payload_lines() {
        for (data, want) in [
            ("", "data: \n\n"),
            ("x", "data: x\n\n"),
            ("a\nb", "data: a\ndata: b\n\n"),
            ("a\r\nb", "data: a\ndata: b\n\n"),
            ("a\rb", "data: a\ndata: b\n\n"),
            ("a\n\rb", "data: a\ndata: \ndata: b\n\n"),
            ("a\r\rb\n", "data: a\ndata: \ndata: b\ndata: \n\n"),
            ("a\r\n\nb", "data: a\ndata: \ndata: b\n\n"),
            ("\n", "data: \ndata: \n\n"),
            ("\r", "data: \ndata: \n\n"),
            ("\r\n", "data: \ndata: \n\n"),
            ("\r\n\r\n", "data: \ndata: \ndata: \n\n"),
            ("x\n", "data: x\ndata: \n\n"),
            (" lead", "data:  lead\n\n"),
            (":colon", "data: :colon\n\n"),
            ("data: x", "data: data: x\n\n"),
        ] {
            assert_eq!(body(None, data.as_bytes()), want, "{data:?}");
        }
        let mut out = Vec::new();
        encode_event_body(&mut out, None, b"\xff\x00");
        assert_eq!(out, b"data: \xff\x00\n\n", "other bytes pass through");
    }

    #[test]
    fn round_trips() {
        for data in [
            "",
            "x",
            "\n",
            "\r",
            "\r\n",
            "\r\n\r\n",
            "\n\n\n",
            "  two leading spaces",
            " one",
            ":colon",
            ": comment-looking",
            "id: 5",
            "event: x\n\ndata: y",
            "retry: 1",
            "a\rb\nc\r\nd",
            "trailing\n",
            "ünïcødé ✓\n",
            "\u{feff}bom",
        ] {
            for name in [None, Some("message"), Some("e"), Some("a:b"), Some(" sp")] {
                let mut out = Vec::new();
                encode_event(&mut out, "00000001-5", name, data.as_bytes());
                let normalised = data.replace("\r\n", "\n").replace('\r', "\n");
                let ty = name.unwrap_or("message");
                assert_eq!(
                    parse_all(&out),
                    [event(Some("00000001-5"), ty, &normalised)],
                    "{data:?} {name:?}"
                );
            }
        }
    }

    #[test]
    fn byte_at_a_time_equals_all_at_once() {
        let mut stream = Vec::new();
        encode_retry(&mut stream, 1234);
        encode_event(&mut stream, "00000001-1", Some("a"), b"x\r\ny\rz\n");
        encode_comment(&mut stream, "hb");
        encode_event(&mut stream, "00000001-2", None, b"");
        stream.extend_from_slice(b"data: crlf\r\n\r\ndata: cr\r\rid: 9\r\ndata:\n\n");
        let whole = parse_all(&stream);
        assert_eq!(whole.len(), 5, "{whole:?}");
        let mut p = EventParser::new();
        for b in &stream {
            p.feed(std::slice::from_ref(b));
        }
        p.feed(b"");
        assert_eq!(
            std::iter::from_fn(|| p.next_event()).collect::<Vec<_>>(),
            whole
        );
        assert_eq!(p.retry(), Some(1234));
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
                event(Some("1"), "a", "x\n y"),
                event(Some("1"), "message", ""),
                event(Some(""), "message", "z"),
            ]
        );
        assert_eq!(p.retry(), Some(1500));

        assert!(
            parse_all(b"event: x\n\n").is_empty(),
            "no data, no dispatch"
        );
        assert_eq!(
            parse_all(b"event: x\n\ndata: d\n\n"),
            [event(None, "message", "d")],
            "the type does not outlive a blank line"
        );
        assert_eq!(
            parse_all(b"id: 1\n\nid: a\0b\ndata: q\n\n"),
            [event(Some("1"), "message", "q")],
            "an id with NUL is ignored"
        );
        assert_eq!(
            parse_all(b"data:no space\ndata:\ndata\n\n"),
            [event(None, "message", "no space\n\n")]
        );
        assert_eq!(
            parse_all(b"Data: x\ndata : y\nfoo: z\n\n"),
            [],
            "field names are exact"
        );
        assert_eq!(
            parse_all(b"\xef\xbb\xbf\xef\xbb\xbfdata: x\n\ndata: \xff\n\n"),
            [event(None, "message", "\u{fffd}")],
            "one BOM only; invalid UTF-8 is replaced"
        );
        assert_eq!(
            parse_all(b"data: x\n\n\xef\xbb\xbfdata: y\n\n"),
            [event(None, "message", "x")],
            "a BOM later is part of the field name"
        );
        assert_eq!(parse_all(b"data: x\n"), [], "end of stream discards");
    }

    #[test]
    fn retry_field() {
        let retry = |s: &[u8]| {
            let mut p = EventParser::new();
            p.feed(s);
            p.retry()
        };
        assert_eq!(retry(b"retry: 10\n"), Some(10));
        assert_eq!(retry(b"retry:10\n"), Some(10));
        assert_eq!(
            retry(b"retry: 10\nretry: x\n"),
            Some(10),
            "non-digits ignored"
        );
        for bad in [
            &b"retry: -1\n"[..],
            b"retry: 1.5\n",
            b"retry: \n",
            b"retry:  1\n",
            b"retry\n",
        ] {
            assert_eq!(retry(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
        assert_eq!(retry(b"retry: 99999999999999999999999\n"), Some(u64::MAX));
    }

    #[test]
    fn last_event_id_moves_only_on_a_blank_line() {
        let mut p = EventParser::new();
        assert_eq!(p.last_event_id(), None);
        p.feed(b"id: 1\ndata: a\n\nid: 2\ndata: b\n");
        assert_eq!(p.last_event_id(), Some("1"), "event 2 was cut off");
        p.feed(b"\n");
        assert_eq!(p.last_event_id(), Some("2"));
        p.feed(b"id: 3\n\n");
        assert_eq!(p.last_event_id(), Some("3"), "set even without data");
        p.feed(b"data: c\n\n");
        let ids: Vec<_> = std::iter::from_fn(|| p.next_event())
            .map(|e| e.id)
            .collect();
        assert_eq!(ids, [Some("1".into()), Some("2".into()), Some("3".into())]);
    }

    #[test]
    fn cr_and_lf_split_across_feeds() {
        let mut p = EventParser::new();
        p.feed(b"data: a\r");
        p.feed(b"\n");
        assert_eq!(
            p.next_event(),
            None,
            "\\r then \\n is one break, not a blank line"
        );
        p.feed(b"data: b\r");
        p.feed(b"\r");
        assert_eq!(p.next_event(), Some(event(None, "message", "a\nb")));
        p.feed(b"data: c\r");
        p.feed(b"data: d\r\n");
        p.feed(b"\r");
        p.feed(b"\n");
        assert_eq!(p.next_event(), Some(event(None, "message", "c\nd")));
        assert_eq!(p.next_event(), None);
    }

    #[test]
    fn cursors() {
        let c = Cursor {
            epoch: 0x1a2b3c4d,
            seqs: vec![17, 0, 5],
        };
        assert_eq!(c.to_string(), "1a2b3c4d-17.0.5");
        assert_eq!(Cursor::parse("1a2b3c4d-17.0.5"), Some(c.clone()));
        let mut out = b"id: ".to_vec();
        c.write(&mut out);
        assert_eq!(out, b"id: 1a2b3c4d-17.0.5");
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
        assert_eq!(Cursor::parse(&many(32)).map(|c| c.seqs.len()), Some(32));
        let longest = Cursor {
            epoch: u32::MAX,
            seqs: vec![u64::MAX; MAX_TOPICS_PER_STREAM],
        }
        .to_string();
        assert!(longest.len() <= MAX_EVENT_ID_LEN);
        assert!(Cursor::parse(&longest).is_some());
        for bad in [
            "",
            "-",
            "1a2b3c4d",
            "1a2b3c4d-",
            "1a2b3c4d-1..2",
            "1a2b3c4d-.1",
            "1a2b3c4d-1.",
            "1A2B3C4D-1",
            "zz-1",
            "1a2b3c4-1",
            "01a2b3c4d-1",
            "1a2b3c4d-+1",
            "1a2b3c4d--1",
            "1a2b3c4d-01",
            "1a2b3c4d-1-2",
            "1a2b3c4d- 1",
            "1a2b3c4d-1 ",
            "1a2b3c4d-١",
            "1a2b3c4d-18446744073709551616",
            "1a2b3c4d-99999999999999999999999",
            &many(33),
            &format!("00000001-{}", "0".repeat(MAX_EVENT_ID_LEN)),
        ] {
            assert_eq!(Cursor::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn retry_jitter() {
        let base = Duration::from_secs(3);
        for rand in [0, 1, 2, 2999, 3000, u64::MAX, u64::MAX - 1, 1 << 63] {
            let r = jittered_retry_ms(base, rand);
            assert!((1500..4500).contains(&r), "{rand} -> {r}");
        }
        for rand in 0..10_000u64 {
            let r = jittered_retry_ms(base, rand.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            assert!((1500..4500).contains(&r), "{rand} -> {r}");
        }
        // Sequential seeds (a connection counter) over 3000 possible values: ~2,130
        // distinct expected from 3000 draws; identical values would mean no spread.
        let spread: std::collections::HashSet<u64> =
            (0..3000u64).map(|i| jittered_retry_ms(base, i)).collect();
        assert!(spread.len() > 1800, "{} distinct values", spread.len());
        let (lo, hi) = (spread.iter().min().unwrap(), spread.iter().max().unwrap());
        assert!(*lo < 1600 && *hi > 4400, "covers the range: {lo}..{hi}");
        assert_eq!(
            jittered_retry_ms(Duration::ZERO, 5),
            0,
            "zero base stays zero"
        );
        assert_eq!(jittered_retry_ms(Duration::from_millis(1), u64::MAX), 0);
        let huge = jittered_retry_ms(Duration::MAX, u64::MAX);
        assert!(huge >= u64::MAX / 4, "no overflow: {huge}");
    }

    /// Line breaks as the client reports them.
    fn normalise(data: &str) -> String {
        data.replace("\r\n", "\n").replace('\r', "\n")
    }

    proptest! {
        #[test]
        fn any_payload_survives(data in "(?s).{0,200}", seq: u64) {
            let id = Cursor { epoch: 7, seqs: vec![seq] }.to_string();
            let mut out = Vec::new();
            encode_event(&mut out, &id, None, data.as_bytes());
            prop_assert_eq!(parse_all(&out), vec![event(Some(&id), "message", &normalise(&data))]);
        }

        #[test]
        fn line_break_heavy_payloads_survive(parts in proptest::collection::vec(prop_oneof!["\r", "\n", "\r\n", " ", ":", "x", "data: "], 0..40)) {
            let data = parts.concat();
            let mut out = Vec::new();
            encode_event(&mut out, "00000001-1", Some("t"), data.as_bytes());
            prop_assert_eq!(parse_all(&out), vec![event(Some("00000001-1"), "t", &normalise(&data))]);
        }

        #[test]
        fn any_event_name_survives(name in "[^\r\n]{1,64}", data in "[a-z\n]{0,20}") {
            let mut out = Vec::new();
            encode_event(&mut out, "00000001-1", Some(&name), data.as_bytes());
            prop_assert_eq!(parse_all(&out), vec![event(Some("00000001-1"), &name, &data)]);
        }

        #[test]
        fn any_split_gives_the_same_events(
            payloads in proptest::collection::vec("(?s).{0,40}", 1..6),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
        ) {
            let mut stream = Vec::new();
            encode_retry(&mut stream, 3000);
            for (i, p) in payloads.iter().enumerate() {
                encode_event(&mut stream, &format!("00000001-{i}"), Some("e"), p.as_bytes());
                encode_comment(&mut stream, "hb");
            }
            let whole = parse_all(&stream);
            prop_assert_eq!(whole.len(), payloads.len());
            let mut cuts: Vec<usize> = cuts.iter().map(|c| c.index(stream.len() + 1)).collect();
            cuts.sort_unstable();
            let mut p = EventParser::new();
            let mut from = 0;
            for cut in cuts.into_iter().chain([stream.len()]) {
                p.feed(&stream[from..cut]);
                from = cut;
            }
            prop_assert_eq!(std::iter::from_fn(|| p.next_event()).collect::<Vec<_>>(), whole);
        }

        #[test]
        fn cursor_round_trip(epoch: u32, seqs in proptest::collection::vec(any::<u64>(), 1..=MAX_TOPICS_PER_STREAM)) {
            let c = Cursor { epoch, seqs };
            let text = c.to_string();
            let mut written = Vec::new();
            c.write(&mut written);
            prop_assert_eq!(written, text.as_bytes());
            prop_assert_eq!(Cursor::parse(&text), Some(c));
        }

        #[test]
        fn cursor_parse_never_panics(s in "[0-9a-fA-F.+-]{0,40}") {
            if let Some(c) = Cursor::parse(&s) {
                prop_assert_eq!(c.to_string(), s, "only canonical text parses");
            }
        }

        #[test]
        fn jitter_in_range(base_ms in 0u64..100_000_000, rand: u64) {
            let r = jittered_retry_ms(Duration::from_millis(base_ms), rand);
            prop_assert!(r >= base_ms / 2 && (r < base_ms + base_ms / 2 || (base_ms <= 1 && r == 0)));
        }
    }
}
