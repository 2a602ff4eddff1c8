//! Typed `user_data` tokens, and every `user_data` value that is not one.
//!
//! Every SQE carries a token saying what it is for; its CQE brings the token back. A
//! token packs the operation kind, the key of what the operation belongs to in its
//! owner's slab (a connection's key; for accepts, the index of the fixed-file table
//! accepted into) and that key's generation, so a completion for a connection that has
//! since been closed and whose key was reused is recognised as stale instead of being
//! applied to the new occupant. The key is not the connection's fixed-file slot: that
//! one the kernel picks, and only the operations themselves name it.
//!
//! ```text
//!  63 62 61 56 55            32 31                             0
//! +--+--+-----+----------------+--------------------------------+
//! |H |T |kind |   generation   |              key               |   a token: H = 0
//! +--+--+-----+----------------+--------------------------------+
//! ```
//!
//! - Bit 63 ([`HELD_BIT`]) set: not a token but the key of memory the driver holds for
//!   the operation (`uring::table`), bit 62 ([`TIMER_BIT`]) telling which slab; the
//!   completion gets the operation's token back from there. A token's kind is below 64,
//!   so it never sets either bit.
//! - From [`SENTINEL_BASE`] (`u64::MAX - 15`) up: sentinels, fixed values for the few
//!   operations that belong to no connection (monoio's convention), all declared below.

/// First reserved sentinel value: nothing at or above it is a token or a held key.
pub const SENTINEL_BASE: u64 = u64::MAX - 15;
/// The first ring's poll on the eventfd further tables signal (`uring::table`).
pub const TABLES_WAKE: u64 = SENTINEL_BASE + 1;
/// A shard's poll on the server's shutdown eventfd (`server::shard`).
pub const SHUTDOWN_POLL: u64 = u64::MAX - 1;

/// The key in tokens of operations that belong to no connection (cancelling a listener's
/// accepts): a slab key, one per connection, never reaches it, so no connection's lookup
/// matches it.
pub const NO_KEY: u32 = u32::MAX;

/// `user_data` bit the driver uses for operations whose memory it holds (see
/// `uring::table::Tables`); tokens never set it, sentinels are above every held key.
pub(super) const HELD_BIT: u64 = 1 << 63;
/// With [`HELD_BIT`]: the memory is in the driver's timer slab, not its slab of other
/// held memory.
pub(super) const TIMER_BIT: u64 = 1 << 62;

/// What an operation is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// Multishot accept on a listener.
    Accept = 1,
    /// Multishot receive on a connection.
    Recv = 2,
    /// A send or writev on a connection.
    Send = 3,
    /// Closing a direct descriptor.
    Close = 4,
    /// A timeout driving the shard's timer wheel.
    Tick = 5,
    /// A message from another shard (MSG_RING).
    Wake = 6,
    /// A cancellation request.
    Cancel = 7,
    /// A client socket being created (load generator).
    Socket = 8,
    /// A client connect (load generator).
    Connect = 9,
    /// A `shutdown(2)` of a connection's write side.
    Shutdown = 10,
    /// A client socket being bound to its source address (load generator).
    Bind = 11,
    /// A socket option being set (load generator; a reset close's linger).
    SockOpt = 12,
    /// Multishot accept on the admin listener (`--admin-listen`).
    AdminAccept = 13,
    /// A single-shot accept on a listener (a nearly full table).
    AcceptOnce = 14,
    /// A connection's direct descriptor installed as a plain one, to read its peer's
    /// address (`--access-log`).
    PeerAddr = 15,
}

/// One more than the largest [`Kind`] value.
const KINDS: u32 = 16;

impl Kind {
    fn from_u8(v: u8) -> Option<Kind> {
        Some(match v {
            1 => Kind::Accept,
            2 => Kind::Recv,
            3 => Kind::Send,
            4 => Kind::Close,
            5 => Kind::Tick,
            6 => Kind::Wake,
            7 => Kind::Cancel,
            8 => Kind::Socket,
            9 => Kind::Connect,
            10 => Kind::Shutdown,
            11 => Kind::Bind,
            12 => Kind::SockOpt,
            13 => Kind::AdminAccept,
            14 => Kind::AcceptOnce,
            15 => Kind::PeerAddr,
            _ => return None,
        })
    }
}

/// A decoded `user_data`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token {
    /// The operation kind.
    pub kind: Kind,
    /// Generation of the key when the operation was submitted (24 bits).
    pub generation: u32,
    /// The key in the owner's slab: a connection's, or a table's index for accepts
    /// (see the module docs); never a fixed-file slot.
    key: u32,
}

const GEN_MASK: u32 = (1 << 24) - 1;

impl Token {
    /// A token; the generation is truncated to 24 bits (wrapping after 16 M reuses of one
    /// key, far beyond any op's lifetime).
    pub fn new(kind: Kind, generation: u32, key: u32) -> Token {
        Token {
            kind,
            generation: generation & GEN_MASK,
            key,
        }
    }

    /// The key in the owner's slab: a connection's, or a table's index for accepts.
    pub fn key(self) -> u32 {
        self.key
    }

    /// Packs into `user_data`.
    pub fn encode(self) -> u64 {
        (u64::from(self.kind as u8) << 56)
            | (u64::from(self.generation & GEN_MASK) << 32)
            | u64::from(self.key)
    }

    /// Unpacks `user_data`; `None` for sentinels and unknown kinds.
    pub fn decode(v: u64) -> Option<Token> {
        if v >= SENTINEL_BASE {
            return None;
        }
        let kind = Kind::from_u8((v >> 56) as u8)?;
        Some(Token {
            kind,
            generation: ((v >> 32) as u32) & GEN_MASK,
            key: v as u32,
        })
    }
}

/// The operations of one connection that are in the kernel, counted by kind.
///
/// The rule it keeps: a connection's fixed-file slot, and the slab key its tokens carry,
/// are given back only once no operation of it is in the kernel. An operation still in
/// flight names the slot (an `IORING_OP_SHUTDOWN` in an io-wq worker looks the slot up
/// when it runs, possibly after a close) and its completion names the key; either,
/// reused too early, hits the next occupant. So every operation is counted from its
/// submission ([`InFlight::start`]) to its last completion ([`InFlight::end`]; for a
/// multishot one, the completion without `IORING_CQE_F_MORE`), and the close is
/// submitted only once [`InFlight::is_empty`] (the close itself is counted too).
///
/// A linked chain counts one operation per entry: each entry completes once (the
/// later ones with `ECANCELED` if an earlier one failed). Up to 15 operations of one
/// kind at a time; a connection has one or two.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct InFlight(u64);

// Four bits per kind, indexed by its value.
const _: () = assert!(KINDS * 4 <= u64::BITS);

impl InFlight {
    fn shift(kind: Kind) -> u32 {
        u32::from(kind as u8) * 4
    }

    /// Operations of this kind in flight.
    pub fn count(self, kind: Kind) -> u32 {
        ((self.0 >> Self::shift(kind)) & 0xf) as u32
    }

    /// Whether an operation of this kind is in flight.
    pub fn has(self, kind: Kind) -> bool {
        self.count(kind) > 0
    }

    /// Whether no operation at all is in flight: the slot and the key may be reused.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// An operation of this kind was submitted.
    ///
    /// # Panics
    /// With 15 of that kind in flight already (a bookkeeping bug).
    pub fn start(&mut self, kind: Kind) {
        assert!(self.count(kind) < 15, "too many {kind:?} in flight");
        self.0 += 1 << Self::shift(kind);
    }

    /// The last completion of an operation of this kind arrived.
    ///
    /// # Panics
    /// With none of that kind in flight (a bookkeeping bug).
    pub fn end(&mut self, kind: Kind) {
        assert!(self.has(kind), "no {kind:?} in flight");
        self.0 -= 1 << Self::shift(kind);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        for kind in [
            Kind::Accept,
            Kind::Recv,
            Kind::Send,
            Kind::Close,
            Kind::Tick,
            Kind::Wake,
            Kind::Cancel,
            Kind::Socket,
            Kind::Connect,
            Kind::Shutdown,
            Kind::Bind,
            Kind::SockOpt,
            Kind::AdminAccept,
            Kind::AcceptOnce,
        ] {
            for (generation, slot) in [(0, 0), (1, 7), (GEN_MASK, u32::MAX), (12345, 999_999)] {
                let t = Token::new(kind, generation, slot);
                assert_eq!(Token::decode(t.encode()), Some(t));
                assert!(t.encode() < SENTINEL_BASE);
                assert_eq!(t.encode() & (HELD_BIT | TIMER_BIT), 0);
            }
        }
        assert_eq!(
            Token::new(Kind::Recv, GEN_MASK + 2, 1).generation,
            1,
            "generation wraps at 24 bits"
        );
        assert_eq!(Token::decode(u64::MAX), None);
        assert_eq!(Token::decode(0), None);
    }

    #[test]
    fn in_flight_counts_each_kind_apart() {
        let mut ops = InFlight::default();
        assert!(ops.is_empty());
        ops.start(Kind::Recv);
        ops.start(Kind::Cancel);
        ops.start(Kind::Cancel);
        ops.start(Kind::AcceptOnce);
        assert_eq!(ops.count(Kind::Cancel), 2);
        assert!(ops.has(Kind::Recv) && !ops.has(Kind::Send));
        ops.end(Kind::Cancel);
        ops.end(Kind::Recv);
        ops.end(Kind::AcceptOnce);
        assert_eq!(ops.count(Kind::Cancel), 1);
        ops.end(Kind::Cancel);
        assert!(ops.is_empty());
        for _ in 0..15 {
            ops.start(Kind::Send);
        }
        assert_eq!(ops.count(Kind::Send), 15);
        assert!(!ops.has(Kind::Recv) && !ops.has(Kind::Close));
    }

    #[test]
    #[should_panic(expected = "no Close in flight")]
    fn in_flight_refuses_an_end_without_a_start() {
        InFlight::default().end(Kind::Close);
    }
}
