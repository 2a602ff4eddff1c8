//! Encoding published events for event streams and poll answers.
//!
//! A text payload goes out as it is, one `data:` line per line. A binary payload (a
//! WebSocket binary message, or a publish body that is not UTF-8) cannot: SSE is text.
//! It goes out losslessly as `event: binary` with the standard base64 (RFC 4648 §4,
//! padded) of the bytes as its one data line, in streams and poll answers alike; a
//! `?event=` name given with a binary body is replaced by `binary`.

use base64::Engine as _;

use crate::proto::sse::{Cursor, encode_event_body, encode_id_line};
use crate::pubsub::Published;

/// The event name and data a stream or poll client sees for `msg`.
fn name_and_data(msg: &Published) -> (Option<&str>, std::borrow::Cow<'_, [u8]>) {
    if msg.text {
        (
            msg.event.as_deref(),
            std::borrow::Cow::Borrowed(&msg.payload),
        )
    } else {
        let b64 = base64::engine::general_purpose::STANDARD.encode(&msg.payload);
        (Some("binary"), std::borrow::Cow::Owned(b64.into_bytes()))
    }
}

/// The part of an SSE event after its id line, shared by every stream of a shard.
pub fn sse_body(msg: &Published) -> Vec<u8> {
    let (name, data) = name_and_data(msg);
    let mut out = Vec::with_capacity(data.len() + 32);
    encode_event_body(&mut out, name, &data);
    out
}

/// `event: reset` for `topic`: the stream's position in it is lost; resynchronise.
pub fn reset_body(topic: &str) -> Vec<u8> {
    let mut out = Vec::new();
    encode_event_body(&mut out, Some("reset"), topic.as_bytes());
    out
}

/// The id line for a stream at `cursor`.
pub fn id_line(cursor: &Cursor) -> Vec<u8> {
    let mut id = Vec::with_capacity(16 + 8 * cursor.seqs.len());
    cursor.write(&mut id);
    let mut out = Vec::with_capacity(id.len() + 5);
    encode_id_line(
        &mut out,
        std::str::from_utf8(&id).expect("cursor ids are ASCII"),
    );
    out
}

/// The JSON answer of `GET /poll`: `{"events":[{"id":..,"event":..,"data":..}],
/// "next":ID}`, plus `"reset":true` when the client's position was lost.
pub fn poll_json(epoch: u32, events: &[(u64, &Published)], next: u64, reset: bool) -> Vec<u8> {
    let mut out =
        Vec::with_capacity(64 + events.iter().map(|e| e.1.payload.len() + 48).sum::<usize>());
    out.extend_from_slice(b"{\"events\":[");
    for (i, (seq, msg)) in events.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let (name, data) = name_and_data(msg);
        out.extend_from_slice(b"{\"id\":\"");
        out.extend_from_slice(id_text(epoch, *seq).as_bytes());
        out.extend_from_slice(b"\",\"event\":");
        json_string(&mut out, name.unwrap_or("message").as_bytes());
        out.extend_from_slice(b",\"data\":");
        json_string(&mut out, &data);
        out.push(b'}');
    }
    out.extend_from_slice(b"],\"next\":\"");
    out.extend_from_slice(id_text(epoch, next).as_bytes());
    out.push(b'"');
    if reset {
        out.extend_from_slice(b",\"reset\":true");
    }
    out.extend_from_slice(b"}\n");
    out
}

/// A single-topic id.
pub fn id_text(epoch: u32, seq: u64) -> String {
    Cursor {
        epoch,
        seqs: vec![seq],
    }
    .to_string()
}

/// Appends `bytes` (UTF-8; anything else is replaced) as a JSON string (RFC 8259 §7).
pub fn json_string(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(b'"');
    for ch in String::from_utf8_lossy(bytes).chars() {
        match ch {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            c if (c as u32) < 0x20 => {
                out.extend_from_slice(format!("\\u{:04x}", c as u32).as_bytes());
            }
            c => {
                let mut buf = [0; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::http::Topic;

    fn msg(text: bool, payload: &[u8], event: Option<&str>) -> Published {
        Published {
            topic: Topic::new("t").unwrap(),
            text,
            payload: payload.to_vec(),
            event: event.map(str::to_owned),
            origin: None,
            ack: None,
            idempotency_key: None,
        }
    }

    #[test]
    fn binary_is_base64_text_is_as_is() {
        assert_eq!(
            sse_body(&msg(true, b"a\nb", Some("x"))),
            b"event: x\ndata: a\ndata: b\n\n"
        );
        assert_eq!(
            sse_body(&msg(false, &[0, 255, 10], Some("x"))),
            b"event: binary\ndata: AP8K\n\n"
        );
        assert_eq!(reset_body("room"), b"event: reset\ndata: room\n\n");
        let c = Cursor {
            epoch: 0xab,
            seqs: vec![3, 0],
        };
        assert_eq!(id_line(&c), b"id: 000000ab-3.0\n");
    }

    #[test]
    fn poll_answers_are_json() {
        let a = msg(true, b"he said \"hi\"\n\t\x01", None);
        let b = msg(false, &[1, 2], Some("ignored"));
        let out = poll_json(1, &[(4, &a), (5, &b)], 5, false);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["events"][0]["id"], "00000001-4");
        assert_eq!(v["events"][0]["event"], "message");
        assert_eq!(v["events"][0]["data"], "he said \"hi\"\n\t\u{1}");
        assert_eq!(v["events"][1]["event"], "binary");
        assert_eq!(v["events"][1]["data"], "AQI=");
        assert_eq!(v["next"], "00000001-5");
        assert!(v.get("reset").is_none());
        let v: serde_json::Value = serde_json::from_slice(&poll_json(1, &[], 9, true)).unwrap();
        assert_eq!(
            (v["next"].as_str(), v["reset"].as_bool()),
            (Some("00000001-9"), Some(true))
        );
    }
}
