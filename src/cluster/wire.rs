//! What ringpush keeps in Redis and how it reads it back: key and channel names, event
//! ids, the event's bytes, and the two scripts that append and read a topic.
//!
//! Per topic `T` (the `{T}` hash tag puts both keys and the channel in one Redis
//! Cluster slot, so a script may touch them all):
//!
//! - stream `ringpush:{T}`: the retained events, `MAXLEN` = `--history`, each entry
//!   one field `m` holding the event's bytes ([`encode`]);
//! - string `ringpush:{T}:born`: the id of the first event of the topic's current life
//!   (set by the first append after Redis held nothing of the topic);
//! - channel `ringpush:{T}`: every appended event as `ID SP BYTES`, published by the
//!   same script that appended it, so announcements come in id order.
//!
//! Stream ids are `MS-SEQ` (Redis's clock in milliseconds, then a counter within the
//! millisecond). A client sees them as one number, `MS * 2^20 + SEQ` ([`event_seq`]),
//! which keeps their order and fits the event id format every node shares.

use std::sync::Arc;

use crate::proto::http::Topic;
use crate::pubsub::{ConnRef, Published};

/// The stream (and channel) of `topic`.
pub fn stream_key(topic: &Topic) -> String {
    format!("ringpush:{{{}}}", topic.as_str())
}

/// The key holding the id of `topic`'s first event in its current life.
pub fn born_key(topic: &Topic) -> String {
    format!("ringpush:{{{}}}:born", topic.as_str())
}

/// The topic a channel name names, if it is one of ours.
pub fn channel_topic(channel: &[u8]) -> Option<Topic> {
    let inner = channel.strip_prefix(b"ringpush:{")?.strip_suffix(b"}")?;
    Topic::new(std::str::from_utf8(inner).ok()?).ok()
}

/// Bits of SEQ in an event number.
const SEQ_BITS: u32 = 20;

/// A stream id (`MS-SEQ`) as one event number; `None` if it is not one, or its parts
/// do not fit (more than a million events of one topic in one millisecond).
pub fn event_seq(id: &[u8]) -> Option<u64> {
    let id = std::str::from_utf8(id).ok()?;
    let (ms, seq) = id.split_once('-')?;
    let (ms, seq): (u64, u64) = (ms.parse().ok()?, seq.parse().ok()?);
    if seq >= 1 << SEQ_BITS || ms >= 1 << (64 - SEQ_BITS) {
        return None;
    }
    Some(ms << SEQ_BITS | seq)
}

/// An event number as the stream id it came from.
pub fn stream_id(seq: u64) -> String {
    format!("{}-{}", seq >> SEQ_BITS, seq & ((1 << SEQ_BITS) - 1))
}

const TEXT: u8 = 1;
const ORIGIN: u8 = 2;
const EVENT: u8 = 4;

/// The bytes Redis keeps and announces for `msg`, published on node `node`: flags, the
/// SSE event name, the node and the publishing connection (so that node does not send
/// the message back to it), then the payload.
pub fn encode(msg: &Published, node: &str) -> Vec<u8> {
    let event = msg.event.as_deref().unwrap_or("");
    let mut out = Vec::with_capacity(16 + event.len() + node.len() + msg.payload.len());
    let flags = (u8::from(msg.text) * TEXT)
        | (u8::from(msg.origin.is_some()) * ORIGIN)
        | (u8::from(msg.event.is_some()) * EVENT);
    out.push(flags);
    if msg.event.is_some() {
        // Event names are at most MAX_EVENT_NAME_LEN (64) bytes, node ids 64.
        out.push(event.len() as u8);
        out.extend_from_slice(event.as_bytes());
    }
    out.push(node.len() as u8);
    out.extend_from_slice(node.as_bytes());
    if let Some(o) = msg.origin {
        out.extend_from_slice(&(o.shard as u32).to_le_bytes());
        out.extend_from_slice(&o.key.to_le_bytes());
        out.extend_from_slice(&o.generation.to_le_bytes());
    }
    out.extend_from_slice(&msg.payload);
    out
}

/// Reads what [`encode`] wrote for `topic`, on node `node`: the origin is kept only if
/// the event was published here.
pub fn decode(topic: &Topic, bytes: &[u8], node: &str) -> Option<Published> {
    let (&flags, mut rest) = bytes.split_first()?;
    let mut take = |n: usize| -> Option<&[u8]> {
        let (head, tail) = rest.split_at_checked(n)?;
        rest = tail;
        Some(head)
    };
    let event = if flags & EVENT != 0 {
        let len = take(1)?[0] as usize;
        Some(String::from_utf8(take(len)?.to_vec()).ok()?)
    } else {
        None
    };
    let len = take(1)?[0] as usize;
    let here = take(len)? == node.as_bytes();
    let origin = if flags & ORIGIN != 0 {
        let b = take(12)?;
        let word = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        here.then(|| ConnRef {
            shard: word(0) as usize,
            key: word(4),
            generation: word(8),
        })
    } else {
        None
    };
    Some(Published {
        topic: topic.clone(),
        text: flags & TEXT != 0,
        payload: rest.to_vec(),
        event,
        origin,
        ack: None,
        idempotency_key: None,
    })
}

/// An announcement (`ID SP BYTES`) as an event number and event.
pub fn decode_announcement(
    topic: &Topic,
    data: &[u8],
    node: &str,
) -> Option<(u64, Arc<Published>)> {
    let space = data.iter().position(|&b| b == b' ')?;
    let seq = event_seq(&data[..space])?;
    let msg = decode(topic, &data[space + 1..], node)?;
    Some((seq, Arc::new(msg)))
}

/// The key remembering which id a publish with `Idempotency-Key` `key` got.
pub fn idempotency_key(topic: &Topic, key: &str) -> String {
    format!("ringpush:{{{}}}:idem:{key}", topic.as_str())
}

/// Appends an event and announces it, in one step. KEYS: stream, born, and the
/// idempotency key's key (any name when the publish has none). ARGV: the `MAXLEN`, a
/// TTL in milliseconds (0: none), the event's bytes, `PUBLISH` (one Redis) or
/// `SPUBLISH` (Redis Cluster), and how long to remember the idempotency key in
/// milliseconds (0: it has none). Returns the new id, or the id the same key got
/// within that time (nothing is appended then).
pub const APPEND: &str = r"
if ARGV[5] ~= '0' then
  local prior = redis.call('GET', KEYS[3])
  if prior then return prior end
end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[1], '*', 'm', ARGV[3])
redis.call('SET', KEYS[2], id, 'NX')
if ARGV[2] ~= '0' then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
end
redis.call(ARGV[4], KEYS[1], id .. ' ' .. ARGV[3])
if ARGV[5] ~= '0' then
  redis.call('SET', KEYS[3], id, 'PX', ARGV[5])
end
return id
";

/// Reads a topic: `{}` if Redis holds nothing of it, else `{born, cut, newest entries
/// first}`. `cut` says what trimming took: `""` nothing, `first:ID` everything before
/// the first retained entry, `last:ID` everything up to the last id (no entry left).
/// (`max-deleted-entry-id` would be exact, but `MAXLEN` trimming does not set it.)
/// KEYS: stream, born. ARGV: how many entries at most.
pub const READ: &str = r"
local born = redis.call('GET', KEYS[2])
if not born then return {} end
local cut = ''
local ok, info = pcall(redis.call, 'XINFO', 'STREAM', KEYS[1])
if ok then
  local f = {}
  for i = 1, #info, 2 do f[info[i]] = info[i + 1] end
  if f['entries-added'] > f['length'] then
    if f['length'] == 0 then
      cut = 'last:' .. f['last-generated-id']
    else
      cut = 'first:' .. f['first-entry'][1]
    end
  end
end
local entries = {}
if ARGV[1] ~= '0' then
  entries = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', ARGV[1])
end
return {born, cut, entries}
";

/// The floor a READ's `born` and `cut` give: positions below it lost events.
pub fn floor(born: u64, cut: &[u8]) -> Option<u64> {
    let trimmed = if cut.is_empty() {
        0
    } else if let Some(id) = cut.strip_prefix(b"first:") {
        // The id just before the first kept one is not known: one below it is safe
        // (a client exactly at the boundary gets a reset it did not need).
        event_seq(id)?.saturating_sub(1)
    } else {
        event_seq(cut.strip_prefix(b"last:")?)?
    };
    Some(trimmed.max(born.saturating_sub(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic() -> Topic {
        Topic::new("chat:room-1").unwrap()
    }

    #[test]
    fn names_carry_the_topic_as_hash_tag() {
        assert_eq!(stream_key(&topic()), "ringpush:{chat:room-1}");
        assert_eq!(born_key(&topic()), "ringpush:{chat:room-1}:born");
        assert_eq!(channel_topic(b"ringpush:{chat:room-1}"), Some(topic()));
        assert_eq!(channel_topic(b"other:{x}"), None);
        assert_eq!(channel_topic(b"ringpush:{bad topic}"), None);
    }

    #[test]
    fn floors_from_what_trimming_took() {
        let born = event_seq(b"100-0").unwrap();
        assert_eq!(floor(born, b""), Some(born - 1), "nothing trimmed");
        let first = event_seq(b"200-3").unwrap();
        assert_eq!(floor(born, b"first:200-3"), Some(first - 1));
        let last = event_seq(b"300-0").unwrap();
        assert_eq!(floor(born, b"last:300-0"), Some(last));
        assert_eq!(floor(born, b"first:x"), None);
    }

    #[test]
    fn ids_map_in_order_and_back() {
        let a = event_seq(b"1764640000000-0").unwrap();
        let b = event_seq(b"1764640000000-1").unwrap();
        let c = event_seq(b"1764640000001-0").unwrap();
        assert!(a < b && b < c);
        assert_eq!(stream_id(b), "1764640000000-1");
        assert_eq!(event_seq(b"1-1048576"), None, "SEQ too large");
        assert_eq!(event_seq(b"12"), None);
        assert_eq!(event_seq(b"x-1"), None);
    }

    #[test]
    fn events_round_trip_and_origin_stays_home() {
        let origin = ConnRef {
            shard: 3,
            key: 77,
            generation: 9,
        };
        let msg = Published {
            topic: topic(),
            text: true,
            payload: b"hello \x00 world".to_vec(),
            event: Some("update".into()),
            origin: Some(origin),
            ack: None,
            idempotency_key: None,
        };
        let bytes = encode(&msg, "node-a");
        let here = decode(&topic(), &bytes, "node-a").unwrap();
        assert_eq!(here.payload, msg.payload);
        assert_eq!(here.event.as_deref(), Some("update"));
        assert!(here.text);
        assert_eq!(here.origin, Some(origin));
        let there = decode(&topic(), &bytes, "node-b").unwrap();
        assert_eq!(there.origin, None, "another node's connection");
        let plain = Published {
            text: false,
            event: None,
            origin: None,
            payload: msg.payload.clone(),
            ..msg
        };
        let back = decode(&topic(), &encode(&plain, "n"), "n").unwrap();
        assert_eq!((back.text, back.event, back.origin), (false, None, None));
        assert_eq!(
            decode(&topic(), &[EVENT, 200], "n").map(|_| ()),
            None,
            "short"
        );
        let mut ann = b"5-1 ".to_vec();
        ann.extend_from_slice(&bytes);
        let (seq, m) = decode_announcement(&topic(), &ann, "x").unwrap();
        assert_eq!((seq, m.payload.len()), ((5 << 20) | 1, msg.payload.len()));
    }
}
