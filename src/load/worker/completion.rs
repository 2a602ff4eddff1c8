//! Completions: each CQE routed to its connection by its token, sends resubmitted until
//! their buffer is written, received bytes fed to the connection's
//! [`Client`](crate::proto::client::Client).

use std::time::Instant;

use super::conn::Stage;
use super::{BGID, PHASE_DRAIN, PHASE_RUN, Worker, errno_name};
use crate::load::publish::Publisher;
use crate::proto::client::{Client, ClientEvent};
use crate::uring::op::{self, Chunk, Held, SendBuf};
use crate::uring::table::Completion;
use crate::uring::token::{Kind, Token};

impl Worker<'_> {
    pub(super) fn conn_for(&self, token: Token) -> Option<usize> {
        let key = token.key() as usize;
        self.conns
            .get(key)
            .filter(|c| c.generation == token.generation && c.stage != Stage::Waiting)
            .map(|_| key)
    }

    pub(super) fn complete(&mut self, now: Instant, cqe: Completion) {
        let Some(token) = Token::decode(cqe.user_data) else {
            return;
        };
        if token.kind == Kind::Tick {
            return self.arm_tick();
        }
        let res = cqe.result;
        if token.kind == Kind::Recv {
            return self.on_recv(now, cqe.table, token, &cqe);
        }
        let Some(key) = self.conn_for(token) else {
            return;
        };
        let c = &mut self.conns[key];
        match token.kind {
            Kind::Socket => {
                c.ops.end(Kind::Socket);
                if res >= 0 {
                    c.has_socket = true;
                } else {
                    c.error.get_or_insert_with(|| errno_name("socket", res));
                }
            }
            Kind::SockOpt | Kind::Bind => {
                c.ops.end(token.kind);
                if res < 0 && res != -libc::ECANCELED {
                    let op = if token.kind == Kind::Bind {
                        "bind"
                    } else {
                        "setsockopt"
                    };
                    c.error.get_or_insert_with(|| errno_name(op, res));
                }
            }
            Kind::Connect => {
                c.ops.end(Kind::Connect);
                self.connecting -= 1;
                if res < 0 {
                    // ECANCELED: the socket or bind before it failed and said why.
                    c.error.get_or_insert_with(|| errno_name("connect", res));
                } else if c.error.is_none() {
                    self.on_connected(key);
                    return;
                }
            }
            Kind::Send => {
                c.ops.end(Kind::Send);
                c.send_busy = false;
                if let Some(Held::Send(buf)) = cqe.held {
                    if let Some(Chunk::Owned(v)) = buf.chunks.into_iter().next() {
                        c.sending = v;
                    }
                }
                if res < 0 {
                    c.sending.clear();
                    c.error.get_or_insert_with(|| errno_name("send", res));
                } else {
                    c.sending.drain(..res as usize);
                    if self.phase == PHASE_RUN || self.phase == PHASE_DRAIN {
                        self.stats.wire_out += res as u64;
                    }
                    if c.stage != Stage::Closing {
                        if c.sending.is_empty() {
                            self.flush(key);
                        } else {
                            self.submit_send(key);
                        }
                        return;
                    }
                }
            }
            Kind::Cancel => c.ops.end(Kind::Cancel),
            Kind::Close => {
                c.ops.end(Kind::Close);
                c.has_socket = false;
                let (table, slot) = (c.table, c.slot);
                self.slots[table].free.push(slot);
                return self.after_close(now, key);
            }
            _ => return,
        }
        self.check_over(now, key);
    }

    /// Sends what is queued if no send is in flight. Over TLS, the session's own
    /// records (handshake, alerts) go first, then the queued plaintext sealed, once the
    /// handshake is done.
    pub(super) fn flush(&mut self, key: usize) {
        let c = &mut self.conns[key];
        if c.send_busy || c.error.is_some() || c.stage == Stage::Closing {
            return;
        }
        let Some(tls) = &mut c.tls else {
            if c.out.is_empty() {
                return;
            }
            std::mem::swap(&mut c.sending, &mut c.out);
            return self.submit_send(key);
        };
        // `sending` is empty when no send is in flight.
        if let Some(records) = tls.take_output() {
            c.sending = records;
        }
        if !tls.is_handshaking() && !c.out.is_empty() {
            let sealed = tls.seal([c.out.as_slice()], &mut self.tls_seal, &mut c.sending);
            c.out.clear();
            if let Err(e) = sealed {
                c.sending.clear();
                c.error.get_or_insert_with(|| format!("tls: {e}"));
                return self.check_over(Instant::now(), key);
            }
        }
        if !c.sending.is_empty() {
            self.submit_send(key);
        }
    }

    /// Submits a send of `sending` (all of it, or the rest after a short send).
    pub(super) fn submit_send(&mut self, key: usize) {
        let c = &mut self.conns[key];
        c.ops.start(Kind::Send);
        c.send_busy = true;
        let buf = SendBuf::new(vec![Chunk::Owned(std::mem::take(&mut c.sending))], 0);
        let data = Token::new(Kind::Send, c.generation, key as u32).encode();
        self.io.send(c.table, c.slot, buf, data);
    }

    pub(super) fn on_recv(&mut self, now: Instant, t: usize, token: Token, cqe: &Completion) {
        let res = cqe.result;
        let bid = cqe.buffer();
        let more = cqe.more();
        let Some(key) = self.conn_for(token) else {
            if let Some(bid) = bid {
                self.io.get_mut(t).bufs.recycle(bid);
            }
            return;
        };
        let mut events = std::mem::take(&mut self.events);
        if let Some(bid) = bid {
            if self.phase == PHASE_RUN || self.phase == PHASE_DRAIN {
                self.stats.wire_in += res.max(0) as u64;
            }
            let bufs = &mut self.io.get_mut(t).bufs;
            let data = bufs.get(bid, res.max(0) as usize);
            let c = &mut self.conns[key];
            let (client, http, out) = (&mut c.client, &mut c.http, &mut c.out);
            if let Some(tls) = &mut c.tls {
                let received = tls.receive(data, &mut self.tls_in, |plain| {
                    feed(client, http, plain, out, &mut events);
                });
                match received {
                    Ok(r) if r.peer_closed => eof(client, http, &mut events),
                    Ok(_) => {}
                    Err(e) => {
                        let during = if tls.is_handshaking() {
                            "tls handshake"
                        } else {
                            "tls"
                        };
                        c.error.get_or_insert_with(|| format!("{during}: {e}"));
                    }
                }
            } else {
                feed(client, http, data, out, &mut events);
            }
            bufs.recycle(bid);
            if let Some(p) = &mut self.conns[key].http {
                let (ok, failed) = p.take_answers();
                self.stats.publish_ok += ok;
                for status in failed {
                    *self
                        .stats
                        .errors
                        .entry(format!("publish: http {status}"))
                        .or_default() += 1;
                }
            }
        } else if res == 0 || (res < 0 && res != -libc::ENOBUFS && res != -libc::ECANCELED) {
            let c = &mut self.conns[key];
            eof(&mut c.client, &mut c.http, &mut events);
        }
        if !more {
            let c = &mut self.conns[key];
            c.ops.end(Kind::Recv);
            // A multishot receive also ends when the buffers ran out (ENOBUFS) or the
            // completion queue overflowed (any result, without the MORE flag): re-arm
            // unless the stream ended. Not re-arming left connections deaf (no pongs,
            // no 101) at 970,000 connections.
            let ended = res == 0 || res == -libc::ECANCELED || (res < 0 && res != -libc::ENOBUFS);
            if !ended && c.stage != Stage::Closing && c.error.is_none() {
                c.ops.start(Kind::Recv);
                let e = op::recv_multi(c.slot, BGID, 0)
                    .user_data(Token::new(Kind::Recv, c.generation, key as u32).encode());
                self.io.push(t, e);
            }
        }
        for ev in events.drain(..) {
            self.on_event(now, key, ev);
        }
        self.events = events;
        self.flush(key);
        self.check_over(now, key);
    }
}

/// Received bytes to the connection's protocol: its client, or its HTTP publisher.
fn feed(
    client: &mut Option<Client>,
    http: &mut Option<Box<Publisher>>,
    data: &[u8],
    out: &mut Vec<u8>,
    events: &mut Vec<ClientEvent>,
) {
    if let Some(client) = client {
        client.handle_bytes(data, out, events);
    } else if let Some(p) = http {
        p.handle_bytes(data, events);
    }
}

/// The end of the byte stream, to the connection's protocol.
fn eof(
    client: &mut Option<Client>,
    http: &mut Option<Box<Publisher>>,
    events: &mut Vec<ClientEvent>,
) {
    if let Some(client) = client {
        client.handle_eof(events);
    } else if let Some(p) = http {
        p.handle_eof(events);
    }
}
