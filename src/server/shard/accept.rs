//! Accepting connections into the fixed-file tables, and opening them.
//!
//! A shard owns one or more fixed-file tables (see `uring::table`), each at most
//! RLIMIT_NOFILE slots, and accepts into one of them at a time. An accept into a full
//! table is not refused by the kernel but dropped: the kernel has already taken the
//! connection off the listen queue when installing it fails with `ENFILE`, and the client
//! sees a reset (seen in tests with 256-slot tables). And one multishot accept takes the
//! whole listen queue in one go. So:
//!
//! - while the table has more free slots than a full listen queue
//!   ([`BACKLOG`](super::BACKLOG) plus the reserve), one multishot accept serves it;
//! - past that, up to [`SINGLE_ACCEPTS`] single-shot accepts, never more than the free
//!   slots, so no accepted connection can miss a slot; connections wait in the listen
//!   queue instead;
//! - when admission slots run out ([`RESERVE`](super::RESERVE) stay free for 503
//!   answers), accepting moves to the first table with room, or to a new table while the
//!   shard is under its cap.

use std::os::fd::AsRawFd;
use std::time::Instant;

use super::{BACKLOG, Conn, LateDeadlines, Multishot, RESERVE, Recv, Shard, TableUse};
use crate::metrics::Transport;
use crate::proto::conn::Connection;
use crate::server::outbox::Outbox;
use crate::uring::op;
use crate::uring::table::Completion;
use crate::uring::token::{InFlight, Kind, NO_KEY, Token};

/// Single-shot accepts kept in flight on a nearly full table.
const SINGLE_ACCEPTS: u32 = 16;

impl Shard {
    /// Keeps accepts armed on the accepting table as the module docs describe: moves to
    /// another table when this one has no admission room, then arms one multishot accept
    /// or tops up the single-shot ones.
    pub(super) fn arm_accept(&mut self) {
        if self.draining() || self.listener.is_none() {
            return;
        }
        if !self.has_room(self.accept_on) {
            self.move_accept();
        }
        let t = self.accept_on;
        let fd = self.listener.as_ref().map_or(-1, |l| l.as_raw_fd());
        let tab = &self.tables[t];
        let free = self
            .io
            .get(t)
            .slots()
            .saturating_sub(tab.live + tab.singles);
        if free > BACKLOG + RESERVE {
            if tab.multishot == Multishot::Off {
                self.tables[t].multishot = Multishot::Armed;
                let e =
                    op::accept_multi(fd).user_data(Token::new(Kind::Accept, 0, t as u32).encode());
                self.push(t, e);
            }
            return;
        }
        if tab.multishot == Multishot::Armed {
            self.cancel_multishot_accept(t);
        }
        let want = SINGLE_ACCEPTS
            .min(free)
            .saturating_sub(self.tables[t].singles);
        for _ in 0..want {
            self.tables[t].singles += 1;
            let e = op::accept(fd).user_data(Token::new(Kind::AcceptOnce, 0, t as u32).encode());
            self.push(t, e);
        }
    }

    /// Ends the multishot accept on table `t` (its final completion clears the state).
    pub(super) fn cancel_multishot_accept(&mut self, t: usize) {
        self.tables[t].multishot = Multishot::Cancelling;
        let e = op::cancel(Token::new(Kind::Accept, 0, t as u32).encode())
            .user_data(Token::new(Kind::Cancel, 0, NO_KEY).encode());
        self.push(t, e);
    }

    /// Whether table `t` may take another admitted connection.
    pub(super) fn has_room(&self, t: usize) -> bool {
        let tab = &self.tables[t];
        tab.live + tab.singles + RESERVE < self.io.get(t).slots()
    }

    /// Points accepting at the first table with admission room, adding a table when
    /// every one is (nearly) full and the shard is under its cap. When none can be had,
    /// accepting stays where it is: the reserve slots then carry 503 answers.
    pub(super) fn move_accept(&mut self) {
        let target = match (0..self.tables.len()).find(|&t| self.has_room(t)) {
            Some(t) => t,
            None if self.conns.len() < self.max_conns => match self.add_table() {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("ringpush: shard {}: {e}", self.id);
                    return;
                }
            },
            None => return,
        };
        let from = self.accept_on;
        if target != from && self.tables[from].multishot == Multishot::Armed {
            self.cancel_multishot_accept(from);
        }
        // Single-shot accepts left on the old table each have a slot; they finish there.
        self.accept_on = target;
    }

    /// Sets up one more table.
    pub(super) fn add_table(&mut self) -> Result<usize, String> {
        let t = self.io.add()?;
        self.tables.push(TableUse {
            live: 0,
            multishot: Multishot::Off,
            singles: 0,
        });
        Ok(t)
    }

    pub(super) fn on_accept(&mut self, now: Instant, t: usize, token: Token, cqe: &Completion) {
        let res = cqe.result;
        if token.kind == Kind::AcceptOnce {
            self.tables[t].singles -= 1;
        } else if !cqe.more() {
            self.tables[t].multishot = Multishot::Off;
        }
        if res >= 0 {
            self.tables[t].live += 1;
        }
        if self.draining() {
            if self
                .tables
                .iter()
                .all(|tab| tab.multishot == Multishot::Off && tab.singles == 0)
            {
                self.listener = None;
            }
        } else {
            // Cheap when nothing changes; otherwise tops up, switches mode or moves.
            self.arm_accept();
        }
        if res < 0 {
            // ECANCELED ends a moved accept; other errors (ECONNABORTED) concern one
            // connection; ENFILE cannot happen by construction (module docs).
            return;
        }
        self.open_conn(now, t, res as u32, false);
    }

    /// A connection on the admin listener (`--admin-listen`): `/metrics` and `/healthz`.
    pub(super) fn on_admin_accept(&mut self, now: Instant, t: usize, cqe: &Completion) {
        if !cqe.more() {
            self.admin_armed = false;
            if self.draining() {
                self.admin_listener = None;
            } else {
                self.arm_admin_accept();
            }
        }
        if cqe.result >= 0 {
            self.tables[t].live += 1;
            self.open_conn(now, t, cqe.result as u32, true);
        }
    }

    /// Keeps one multishot accept armed on the admin listener, if there is one. Admin
    /// traffic is a scrape now and then: it takes a slot of whichever table accepts.
    pub(super) fn arm_admin_accept(&mut self) {
        let Some(l) = &self.admin_listener else {
            return;
        };
        if self.admin_armed || self.draining() {
            return;
        }
        self.admin_armed = true;
        let t = self.accept_on;
        let e = op::accept_multi(l.as_raw_fd())
            .user_data(Token::new(Kind::AdminAccept, 0, t as u32).encode());
        self.push(t, e);
    }

    /// The peer's address of a new connection (`--access-log`), from its descriptor
    /// installed as a plain one: then its receive is armed.
    pub(super) fn on_peer_addr(&mut self, now: Instant, token: Token, cqe: &Completion) {
        let peer = crate::uring::net::take_peer_addr(cqe.result);
        if let Some(key) = self.conn_for(token) {
            let c = &mut self.conns[key];
            // Failing (ENOTCONN: the client has already gone) leaves it unknown.
            if let (Some(a), Ok(peer)) = (c.addrs.as_deref_mut(), peer) {
                a.peer = Some(peer);
            }
            self.on_op_done(now, token, Kind::PeerAddr);
        }
    }

    /// A new connection in slot `file_slot` of table `t`.
    pub(super) fn open_conn(&mut self, now: Instant, t: usize, file_slot: u32, admin: bool) {
        let generation = self.next_generation;
        self.next_generation = self.next_generation.wrapping_add(1) & 0x00ff_ffff;
        let mut proto = Connection::new(now, &self.conn_cfg, self.rng.next_u64() as u32);
        if admin {
            proto = proto.admin();
        }
        // Admission control: over the cap (or shutting down) the client is told 503.
        let over = self.conns.len() >= self.max_conns || self.draining();
        self.metrics.accepted();
        if over {
            let retry = if self.draining() { 5 } else { 1 };
            proto.reject_overloaded(now, &self.conn_cfg, retry);
            self.metrics.overloaded();
        }
        let key = self.conns.insert(Conn {
            table: t as u32,
            file_slot,
            generation,
            proto,
            out: Outbox::default(),
            recv: Recv::Off,
            ops: InFlight::default(),
            send_id: 0,
            flush_queued: false,
            cancelled: false,
            shut_wr: false,
            peer_gone: false,
            may_publish: true,
            timer_at: None,
            transport: Transport::Http,
            late: LateDeadlines::default(),
            addrs: None,
            tls: None,
        });
        if let (Some(certs), false) = (self.certs.as_mut(), admin) {
            match certs.session() {
                Ok(tls) => self.conns[key].tls = Some(tls),
                Err(e) => {
                    eprintln!("ringpush: TLS: {e}");
                    self.conns[key].proto.fail_tls();
                }
            }
        }
        if self.config.access_log && !over {
            // The peer's address, for the log; receiving waits for it (`flow`).
            let c = &mut self.conns[key];
            c.addrs = Some(Box::default());
            c.ops.start(Kind::PeerAddr);
            let e = op::install_fd(file_slot)
                .user_data(Token::new(Kind::PeerAddr, generation, key as u32).encode());
            self.push(t, e);
        }
        // `pump` arms the receive.
        self.pump(now, key);
    }
}
