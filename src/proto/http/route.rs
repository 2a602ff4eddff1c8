//! Routing (which endpoint a request head asks for) and the decoding it needs: topics,
//! event ids and `Last-Event-ID`, query strings, percent-escapes and durations.

use std::fmt;
use std::time::Duration;

use super::{HttpError, Method, RequestHead};
use crate::proto::limits::{
    MAX_EVENT_ID_LEN, MAX_EVENT_NAME_LEN, MAX_IDEMPOTENCY_KEY_LEN, MAX_POLL_WAIT, MAX_TOPIC_LEN,
    MAX_TOPICS_PER_STREAM,
};

/// A validated topic name: 1 to [`MAX_TOPIC_LEN`] characters of `A-Z a-z 0-9 . _ - :`.
///
/// The alphabet needs no escaping in a path, a query, an SSE `id:` line or JSON, and
/// `:` leaves room for namespaces such as `user:42` (direct messages are topics).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Topic(String);

impl Topic {
    /// Validates `s` as a topic name; anything else is [`HttpError::BadTopic`].
    pub fn new(s: &str) -> Result<Topic, HttpError> {
        let ok = !s.is_empty()
            && s.len() <= MAX_TOPIC_LEN
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':'));
        if ok {
            Ok(Topic(s.to_owned()))
        } else {
            Err(HttpError::BadTopic)
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `GET`/`HEAD /`: the demo page.
    Index,
    /// `GET`/`HEAD /healthz`.
    Healthz,
    /// `GET`/`HEAD /metrics`.
    Metrics,
    /// `GET /echo`: a WebSocket echo (the upgrade is checked by `handshake::validate`).
    Echo,
    /// `GET /ws/{topic}`: a WebSocket subscribed to `topic`.
    Ws {
        /// The topic.
        topic: Topic,
    },
    /// `GET /sse/{topic}` or `GET /sse?topic=a&topic=b`: an event stream.
    Sse {
        /// 1 to [`MAX_TOPICS_PER_STREAM`] topics in request order, without duplicates.
        topics: Vec<Topic>,
        /// `Last-Event-ID` header, else `?lastEventId=`; unparsed. Empty: `None` (no
        /// position). Longer than [`MAX_EVENT_ID_LEN`]: cut to just over it, so it stays
        /// an id that is not ours and the stream starts with `event: reset`.
        last_event_id: Option<String>,
    },
    /// `POST /publish/{topic}[?event=NAME]`.
    Publish {
        /// The topic.
        topic: Topic,
        /// The SSE event name, 1 to [`MAX_EVENT_NAME_LEN`] bytes without CR, LF or NUL.
        event: Option<String>,
        /// `Idempotency-Key`: 1 to [`MAX_IDEMPOTENCY_KEY_LEN`] visible ASCII characters.
        /// A publish with a key seen on the topic within the last
        /// [`IDEMPOTENCY_WINDOW`](crate::proto::limits::IDEMPOTENCY_WINDOW) is not
        /// published again: it gets the first one's id.
        idempotency_key: Option<String>,
    },
    /// `GET /poll/{topic}?since=ID&wait=D`.
    Poll {
        /// The topic.
        topic: Topic,
        /// The last id the client has, as for [`Route::Sse`]: empty is `None`, too long
        /// is kept (cut) so the answer is `"reset":true`.
        since: Option<String>,
        /// Long-polling budget, at most [`MAX_POLL_WAIT`]; absent or zero: `None`
        /// (answer at once).
        wait: Option<Duration>,
    },
}

/// `Allow` values (RFC 9110 §10.2.1) for the 405 of each kind of endpoint.
const ALLOW_GET_HEAD: &str = "GET, HEAD";
const ALLOW_GET: &str = "GET";
const ALLOW_POST: &str = "POST";

/// Decides the endpoint for a request head.
///
/// Order of checks: the path picks the endpoint (unknown: 404), then the method (wrong:
/// 405 with `Allow`), then the topic and query (400). `/ws`, `/sse`, `/poll` and
/// `/publish` take exactly one topic segment; a further `/` (including a trailing one)
/// is 404, as is any trailing-slash variant of a fixed path except `/` itself.
pub fn route(head: &RequestHead) -> Result<Route, HttpError> {
    let path = head.path.as_str();
    let allow = |allow: &'static str| {
        let ok = match allow {
            ALLOW_GET_HEAD => matches!(head.method, Method::Get | Method::Head),
            ALLOW_GET => head.method == Method::Get,
            _ => head.method == Method::Post,
        };
        if ok {
            Ok(())
        } else {
            Err(HttpError::MethodNotAllowed { allow })
        }
    };
    // Endpoints with a `{topic}` segment.
    for (prefix, methods) in [
        ("/ws/", ALLOW_GET),
        ("/sse/", ALLOW_GET),
        ("/publish/", ALLOW_POST),
        ("/poll/", ALLOW_GET),
    ] {
        let Some(segment) = path.strip_prefix(prefix) else {
            continue;
        };
        if segment.contains('/') {
            return Err(HttpError::NotFound);
        }
        allow(methods)?;
        let topic = path_topic(segment)?;
        return match prefix {
            "/ws/" => Ok(Route::Ws { topic }),
            "/sse/" => {
                let query = parse_query(&head.query)?;
                Ok(Route::Sse {
                    topics: vec![topic],
                    last_event_id: last_event_id(head, &query),
                })
            }
            "/publish/" => publish(topic, &head.query, head.idempotency_key.as_deref()),
            _ => poll(topic, &head.query),
        };
    }
    match path {
        "/" => allow(ALLOW_GET_HEAD).map(|()| Route::Index),
        "/healthz" => allow(ALLOW_GET_HEAD).map(|()| Route::Healthz),
        "/metrics" => allow(ALLOW_GET_HEAD).map(|()| Route::Metrics),
        "/echo" => allow(ALLOW_GET).map(|()| Route::Echo),
        "/sse" => {
            allow(ALLOW_GET)?;
            let query = parse_query(&head.query)?;
            let mut topics: Vec<Topic> = Vec::new();
            for (_, v) in query.iter().filter(|(k, _)| k == "topic") {
                let t = Topic::new(v)?;
                if !topics.contains(&t) {
                    // Stop at the first topic over the cap: the dedup scan stays
                    // O(MAX_TOPICS_PER_STREAM) per parameter however long the query.
                    if topics.len() == MAX_TOPICS_PER_STREAM {
                        return Err(HttpError::BadQuery);
                    }
                    topics.push(t);
                }
            }
            if topics.is_empty() {
                return Err(HttpError::BadQuery);
            }
            Ok(Route::Sse {
                topics,
                last_event_id: last_event_id(head, &query),
            })
        }
        _ => Err(HttpError::NotFound),
    }
}

/// `POST /publish/{topic}[?event=NAME]`.
fn publish(topic: Topic, query: &str, key: Option<&str>) -> Result<Route, HttpError> {
    let idempotency_key = match key {
        Some(k)
            if k.is_empty()
                || k.len() > MAX_IDEMPOTENCY_KEY_LEN
                || !k.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            return Err(HttpError::BadIdempotencyKey);
        }
        k => k.map(str::to_owned),
    };
    let mut event = None;
    for (k, v) in parse_query(query)? {
        if k == "event" {
            // The name goes on an SSE `event:` line: a CR or LF would end that line and
            // let a publisher forge fields in every subscriber's stream (WHATWG HTML
            // §9.2.6); NUL is refused by many clients.
            let bad = v.is_empty()
                || v.len() > MAX_EVENT_NAME_LEN
                || v.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0));
            if bad {
                return Err(HttpError::BadEventName);
            }
            event = Some(v);
        }
    }
    Ok(Route::Publish {
        topic,
        event,
        idempotency_key,
    })
}

/// `GET /poll/{topic}?since=ID&wait=D`.
fn poll(topic: Topic, query: &str) -> Result<Route, HttpError> {
    let (mut since, mut wait) = (None, None);
    for (k, v) in parse_query(query)? {
        match k.as_str() {
            "since" => since = event_id(v),
            "wait" => {
                let d = parse_duration(&v)
                    .filter(|d| *d <= MAX_POLL_WAIT)
                    .ok_or(HttpError::BadQuery)?;
                wait = (!d.is_zero()).then_some(d);
            }
            _ => {}
        }
    }
    Ok(Route::Poll { topic, since, wait })
}

/// A topic from a path segment: percent-decoded (RFC 3986 §2.1), then validated. A bad
/// escape is a bad topic too: the client asked for a name we cannot have.
fn path_topic(segment: &str) -> Result<Topic, HttpError> {
    Topic::new(&percent_decode(segment).map_err(|_| HttpError::BadTopic)?)
}

/// An event id as the client sent it; empty is no id at all.
///
/// One longer than [`MAX_EVENT_ID_LEN`] is not ours, but the client did send a position,
/// so it must get a reset like any unknown id, never be served as if it had sent none
/// (it would miss the news that its position is lost). It is cut to the first char
/// boundary past the limit: still too long for `Cursor::parse`, which refuses anything
/// over [`MAX_EVENT_ID_LEN`], and no more than 4 bytes over it however long the input.
fn event_id(mut id: String) -> Option<String> {
    if id.len() > MAX_EVENT_ID_LEN {
        // `id.len()` is a boundary, so `find` always succeeds.
        let cut = (MAX_EVENT_ID_LEN + 1..=id.len())
            .find(|&i| id.is_char_boundary(i))
            .unwrap_or(id.len());
        id.truncate(cut);
    }
    (!id.is_empty()).then_some(id)
}

/// The `Last-Event-ID` header (WHATWG HTML §9.2.4, sent by `EventSource` on reconnect),
/// else `?lastEventId=` for clients that cannot set headers. The header wins even when
/// it is unusable: a client that sent one meant it.
fn last_event_id(head: &RequestHead, query: &[(String, String)]) -> Option<String> {
    match &head.last_event_id {
        Some(id) => event_id(id.clone()),
        None => query
            .iter()
            .find(|(k, _)| k == "lastEventId")
            .and_then(|(_, v)| event_id(v.clone())),
    }
}

/// Splits a query string into decoded `(key, value)` pairs, in order, repeats kept
/// (`application/x-www-form-urlencoded`, WHATWG URL §5.1): pairs split on `&`, key and
/// value on the first `=` (no `=`: empty value), `+` is a space, `%XX` a byte. Empty
/// pairs (`a=1&&b=2`) are skipped. A bad escape or a non-UTF-8 result is
/// [`HttpError::BadQuery`].
pub fn parse_query(q: &str) -> Result<Vec<(String, String)>, HttpError> {
    let mut out = Vec::new();
    for pair in q.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        // `+` first, so an escaped `%2B` stays a plus.
        let k = percent_decode(&k.replace('+', " "))?;
        let v = percent_decode(&v.replace('+', " "))?;
        out.push((k, v));
    }
    Ok(out)
}

/// The value of one hex digit.
fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decodes `%XX` escapes (RFC 3986 §2.1; either case of hex digit); every other byte is
/// kept, `+` included. A `%` without two hex digits, or a result that is not UTF-8, is
/// [`HttpError::BadQuery`].
pub fn percent_decode(s: &str) -> Result<String, HttpError> {
    if !s.contains('%') {
        return Ok(s.to_owned());
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let (hi, lo) = match b.get(i + 1..i + 3) {
                Some(&[hi, lo]) => (hex_digit(hi), hex_digit(lo)),
                _ => (None, None),
            };
            let (Some(hi), Some(lo)) = (hi, lo) else {
                return Err(HttpError::BadQuery);
            };
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| HttpError::BadQuery)
}

/// Parses a duration: ASCII digits then a unit `ms`, `s`, `m` or `h` (`500ms`, `30s`,
/// `2m`, `1h`); plain digits are seconds. No spaces, signs, fractions or upper-case
/// units. Exact: every value that fits a `u64` of its unit is accepted, and a count that
/// overflows (`99999999999999999999s`, or minutes/hours beyond `u64` seconds) is `None`,
/// never a panic or a wrap.
pub fn parse_duration(s: &str) -> Option<Duration> {
    // The first non-digit byte is ASCII or a UTF-8 lead byte, so a char boundary.
    let split = s
        .bytes()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    if digits.is_empty() {
        return None;
    }
    // Only ASCII digits, so this fails only on overflow.
    let n: u64 = digits.parse().ok()?;
    match unit {
        "ms" => Some(Duration::from_millis(n)),
        "" | "s" => Some(Duration::from_secs(n)),
        "m" => n.checked_mul(60).map(Duration::from_secs),
        "h" => n.checked_mul(3600).map(Duration::from_secs),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::proto::http::testing::{get, post, req, t};
    use crate::proto::http::write_error;

    #[test]
    fn routes() {
        assert_eq!(route(&get("/")), Ok(Route::Index));
        assert_eq!(route(&req("HEAD", "/")), Ok(Route::Index));
        assert_eq!(route(&get("/healthz")), Ok(Route::Healthz));
        assert_eq!(route(&req("HEAD", "/healthz?x")), Ok(Route::Healthz));
        assert_eq!(route(&get("/metrics")), Ok(Route::Metrics));
        assert_eq!(route(&get("/echo")), Ok(Route::Echo));
        assert_eq!(
            route(&get("/ws/a.b_c-d:e")),
            Ok(Route::Ws {
                topic: t("a.b_c-d:e")
            })
        );
        assert_eq!(
            route(&get("/ws/user%3AB")),
            Ok(Route::Ws { topic: t("user:B") }),
            "percent-decoded"
        );
        assert_eq!(
            route(&get("/sse/news")),
            Ok(Route::Sse {
                topics: vec![t("news")],
                last_event_id: None
            })
        );
        assert_eq!(
            route(&get(
                "/sse?topic=a&topic=b&topic=a&x=y&lastEventId=0a0b0c0d-1.2"
            )),
            Ok(Route::Sse {
                topics: vec![t("a"), t("b")],
                last_event_id: Some("0a0b0c0d-1.2".into())
            }),
            "duplicates removed in first order, unknown keys ignored"
        );
        assert_eq!(
            route(&get("/sse?topic=user%3Ab&topic=c")),
            Ok(Route::Sse {
                topics: vec![t("user:b"), t("c")],
                last_event_id: None
            })
        );
        assert_eq!(route(&get("/sse?topic=a%2Fb")), Err(HttpError::BadTopic));
        assert_eq!(route(&get("/sse")), Err(HttpError::BadQuery), "no topic");
        assert_eq!(route(&get("/sse?topic=a&x=%zz")), Err(HttpError::BadQuery));
        let cap: String = (0..32).map(|i| format!("topic=t{i}&topic=t0&")).collect();
        assert!(
            matches!(route(&get(&format!("/sse?{cap}"))), Ok(Route::Sse { topics, .. }) if topics.len() == 32)
        );
        let too_many: String = (0..33).map(|i| format!("topic=t{i}&")).collect();
        assert_eq!(
            route(&get(&format!("/sse?{too_many}"))),
            Err(HttpError::BadQuery)
        );
        assert_eq!(
            route(&get("/poll/news?since=0a0b0c0d-4&wait=2s")),
            Ok(Route::Poll {
                topic: t("news"),
                since: Some("0a0b0c0d-4".into()),
                wait: Some(Duration::from_secs(2))
            })
        );
        for q in ["wait=0", "wait=0ms", "", "since=", "other=1"] {
            assert_eq!(
                route(&get(&format!("/poll/news?{q}"))),
                Ok(Route::Poll {
                    topic: t("news"),
                    since: None,
                    wait: None
                }),
                "{q}"
            );
        }
        assert_eq!(
            route(&get("/poll/news?wait=5m")),
            Ok(Route::Poll {
                topic: t("news"),
                since: None,
                wait: Some(MAX_POLL_WAIT)
            }),
            "5 minutes is the cap, inclusive"
        );
        for q in [
            "wait=300001ms",
            "wait=10m",
            "wait=soon",
            "wait=",
            "wait=1.5s",
        ] {
            assert_eq!(
                route(&get(&format!("/poll/news?{q}"))),
                Err(HttpError::BadQuery),
                "{q}"
            );
        }
        assert_eq!(
            route(&post("/publish/news?event=up+date")),
            Ok(Route::Publish {
                topic: t("news"),
                event: Some("up date".into()),
                idempotency_key: None,
            })
        );
        assert_eq!(
            route(&post("/publish/news")),
            Ok(Route::Publish {
                topic: t("news"),
                event: None,
                idempotency_key: None,
            })
        );
        assert_eq!(
            route(&post(&format!("/publish/news?event={}", "e".repeat(64)))),
            Ok(Route::Publish {
                topic: t("news"),
                event: Some("e".repeat(64)),
                idempotency_key: None,
            })
        );
        for bad in ["a%0Ab", "a%0Db", "a%00b", "", &"e".repeat(65)] {
            assert_eq!(
                route(&post(&format!("/publish/news?event={bad}"))),
                Err(HttpError::BadEventName),
                "{bad:?}"
            );
        }
        assert_eq!(HttpError::BadEventName.status().code(), 400);
    }

    #[test]
    fn last_event_id_sources() {
        let mut h = get("/sse/x?lastEventId=q");
        h.last_event_id = Some("hdr".into());
        assert_eq!(
            route(&h),
            Ok(Route::Sse {
                topics: vec![t("x")],
                last_event_id: Some("hdr".into())
            }),
            "header wins"
        );
        let long = "i".repeat(MAX_EVENT_ID_LEN + 1);
        h.last_event_id = Some("i".repeat(5000));
        assert_eq!(
            route(&h),
            Ok(Route::Sse {
                topics: vec![t("x")],
                last_event_id: Some(long.clone())
            }),
            "too long: kept, cut just past the limit, so it is an unknown id"
        );
        let ok = "i".repeat(MAX_EVENT_ID_LEN);
        for (target, want) in [
            (format!("/sse/x?lastEventId={ok}"), Some(ok.clone())),
            (format!("/sse/x?lastEventId={long}i"), Some(long.clone())),
            ("/sse/x?lastEventId=".to_string(), None),
        ] {
            assert_eq!(
                route(&get(&target)),
                Ok(Route::Sse {
                    topics: vec![t("x")],
                    last_event_id: want
                })
            );
        }
        for (since, want) in [
            (format!("{long}iii"), Some(long.clone())),
            (ok.clone(), Some(ok.clone())),
            (String::new(), None),
        ] {
            assert_eq!(
                route(&get(&format!("/poll/x?since={since}"))),
                Ok(Route::Poll {
                    topic: t("x"),
                    since: want,
                    wait: None
                })
            );
        }
    }

    /// An over-long id is cut on a char boundary, stays over the limit, and is never
    /// a position `Cursor::parse` accepts (so the shard answers it with a reset).
    #[test]
    fn over_long_ids_stay_unknown() {
        use crate::proto::sse::Cursor;
        // A valid cursor padded with more topics than a stream can have, past the limit.
        let seqs = vec!["0"; MAX_EVENT_ID_LEN];
        let padded = format!("0a0b0c0d-{}", seqs.join("."));
        for id in [
            padded,
            "é".repeat(MAX_EVENT_ID_LEN),
            format!("{}€", "i".repeat(MAX_EVENT_ID_LEN)),
            format!("{}😀x", "i".repeat(MAX_EVENT_ID_LEN - 1)),
        ] {
            let cut = event_id(id.clone()).expect("kept");
            assert!(id.starts_with(&cut), "a prefix");
            assert!(
                (MAX_EVENT_ID_LEN + 1..=MAX_EVENT_ID_LEN + 4).contains(&cut.len()),
                "{}",
                cut.len()
            );
            assert_eq!(Cursor::parse(&cut), None);
        }
        assert_eq!(event_id(String::new()), None);
        assert_eq!(event_id("0a0b0c0d-1".into()).as_deref(), Some("0a0b0c0d-1"));
    }

    #[test]
    fn methods_and_unknown_paths() {
        let gh = HttpError::MethodNotAllowed { allow: "GET, HEAD" };
        let g = HttpError::MethodNotAllowed { allow: "GET" };
        let p = HttpError::MethodNotAllowed { allow: "POST" };
        for (method, target, want) in [
            ("POST", "/", gh),
            ("POST", "/healthz", gh),
            ("DELETE", "/metrics", gh),
            ("POST", "/echo", g),
            ("HEAD", "/echo", g),
            ("POST", "/ws/a", g),
            ("PUT", "/ws/bad%20topic", g),
            ("HEAD", "/sse/a", g),
            ("POST", "/sse?topic=a", g),
            ("HEAD", "/poll/a", g),
            ("GET", "/publish/news", p),
            ("HEAD", "/publish/news", p),
        ] {
            assert_eq!(route(&req(method, target)), Err(want), "{method} {target}");
        }
        let mut out = Vec::new();
        write_error(&mut out, &gh);
        assert!(out.windows(17).any(|w| w == b"Allow: GET, HEAD\r"));
        for target in [
            "/nope",
            "/healthz/",
            "/metrics/",
            "/echo/",
            "/ws",
            "/ws/a/",
            "/ws/a/b",
            "/sse/a/b",
            "/publish/a/",
            "/poll/a/b",
            "//",
            "/HEALTHZ",
        ] {
            assert_eq!(route(&get(target)), Err(HttpError::NotFound), "{target}");
        }
        assert_eq!(route(&req("DELETE", "/nope")), Err(HttpError::NotFound));
        assert_eq!(HttpError::NotFound.status().code(), 404);
        assert_eq!(route(&get("/ws/")), Err(HttpError::BadTopic));
        assert_eq!(route(&get("/sse/")), Err(HttpError::BadTopic));
        assert_eq!(route(&get("/ws/a%20b")), Err(HttpError::BadTopic));
        assert_eq!(route(&get("/ws/a%2Fb")), Err(HttpError::BadTopic));
        assert_eq!(route(&get("/ws/a%zz")), Err(HttpError::BadTopic));
        assert_eq!(
            route(&get("/ws/a+b")),
            Err(HttpError::BadTopic),
            "+ is not a space in a path"
        );
    }

    #[test]
    fn topic_names() {
        assert!(Topic::new(&"a".repeat(MAX_TOPIC_LEN)).is_ok());
        assert_eq!(Topic::new(&"a".repeat(129)), Err(HttpError::BadTopic));
        assert_eq!(Topic::new(""), Err(HttpError::BadTopic));
        for ok in [
            "A", "z", "0", "9", ".", "_", "-", ":", "user:42", "a.b-c_d", "..",
        ] {
            assert!(Topic::new(ok).is_ok(), "{ok}");
        }
        for bad in [
            "a/b",
            "a b",
            "é",
            "a\u{ff1a}b",
            "a?",
            "a#",
            "a%",
            "a+",
            "a\0",
            "a\n",
            "a=b",
            "a&b",
            "~",
        ] {
            assert_eq!(Topic::new(bad), Err(HttpError::BadTopic), "{bad}");
        }
        assert_eq!(
            Topic::new(&percent_decode("user%3A42%2eb").unwrap()),
            Ok(t("user:42.b")),
            "a percent-encoded legal topic"
        );
        assert_eq!(t("chat").to_string(), "chat");
        assert_eq!(t("chat").as_str(), "chat");
        assert!(t("a") < t("b"));
        assert!(
            HttpError::BadTopic
                .message()
                .contains(&MAX_TOPIC_LEN.to_string())
        );
        assert!(
            HttpError::BadEventName
                .message()
                .contains(&MAX_EVENT_NAME_LEN.to_string())
        );
        assert_eq!(HttpError::BadTopic.status().code(), 400);
    }

    #[test]
    fn queries() {
        assert_eq!(
            parse_query("topic=a&topic=b%2Fc&x=a+b&p=%2B&flag&&=v&e=a=b").unwrap(),
            [
                ("topic".to_string(), "a".to_string()),
                ("topic".into(), "b/c".into()),
                ("x".into(), "a b".into()),
                ("p".into(), "+".into()),
                ("flag".into(), "".into()),
                ("".into(), "v".into()),
                ("e".into(), "a=b".into()),
            ]
        );
        assert_eq!(parse_query("").unwrap(), []);
        assert_eq!(
            parse_query("a%20b=%e2%82%AC").unwrap(),
            [("a b".to_string(), "€".to_string())]
        );
        for bad in ["a=%zz", "a=%4", "a=%", "a=%%41", "%zz=1", "a=%ff", "a=%c3"] {
            assert_eq!(parse_query(bad), Err(HttpError::BadQuery), "{bad}");
        }
        assert_eq!(percent_decode("%C3%A9").unwrap(), "é");
        assert_eq!(percent_decode("a+b").unwrap(), "a+b");
        assert_eq!(percent_decode("%41%4a%4A").unwrap(), "AJJ");
        assert_eq!(percent_decode("é%41").unwrap(), "éA");
        assert_eq!(percent_decode("%é"), Err(HttpError::BadQuery));
        assert_eq!(HttpError::BadQuery.status().code(), 400);
    }

    #[test]
    fn durations() {
        for (s, d) in [
            ("500ms", Duration::from_millis(500)),
            ("30s", Duration::from_secs(30)),
            ("2m", Duration::from_secs(120)),
            ("1h", Duration::from_secs(3600)),
            ("10", Duration::from_secs(10)),
            ("0", Duration::ZERO),
            ("007s", Duration::from_secs(7)),
            ("18446744073709551615ms", Duration::from_millis(u64::MAX)),
            ("18446744073709551615", Duration::from_secs(u64::MAX)),
            (
                "307445734561825860m",
                Duration::from_secs(307_445_734_561_825_860 * 60),
            ),
        ] {
            assert_eq!(parse_duration(s), Some(d), "{s}");
        }
        for bad in [
            "",
            "s",
            "ms",
            "1.5s",
            "-1s",
            "+1s",
            "10x",
            "10sec",
            "1ms2",
            "99999999999999999999s",
            "18446744073709551616",
            "307445734561825861m",
            "5124095576030432h",
            " 1s",
            "1 s",
            "1s ",
            "1S",
            "1\u{661}s",
            "1é",
        ] {
            assert_eq!(parse_duration(bad), None, "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn query_and_duration_never_panic(s in "\\PC{0,40}") {
            let _ = parse_query(&s);
            let _ = percent_decode(&s);
            let _ = parse_duration(&s);
        }

        #[test]
        fn valid_topics_accepted(name in "[A-Za-z0-9._:-]{1,128}") {
            prop_assert_eq!(Topic::new(&name).map(|t| t.as_str().to_owned()), Ok(name));
        }

        #[test]
        fn durations_round_trip(n in 0u64..=u64::MAX / 3600, unit in 0usize..4) {
            let (suffix, d) = [
                ("ms", Duration::from_millis(n)),
                ("s", Duration::from_secs(n)),
                ("m", Duration::from_secs(n * 60)),
                ("h", Duration::from_secs(n * 3600)),
            ][unit];
            prop_assert_eq!(parse_duration(&format!("{n}{suffix}")), Some(d));
        }
    }
}
