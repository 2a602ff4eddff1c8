//! Typed `user_data` tokens.
//!
//! Every SQE carries a token saying what it is for; its CQE brings the token back. A
//! token packs the operation kind, the slot of the connection (or listener) in its slab
//! and that slot's generation, so a completion for a connection that has since been
//! closed and whose slot was reused is recognised as stale instead of being applied to
//! the new occupant.
//!
//! ```text
//!  63      56 55            32 31                             0
//! +----------+----------------+--------------------------------+
//! |   kind   |   generation   |              slot              |
//! +----------+----------------+--------------------------------+
//! ```
//!
//! Values from `u64::MAX - 15` up are reserved for sentinels (monoio's convention).

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
}

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
            _ => return None,
        })
    }
}

/// First reserved sentinel value.
pub const SENTINEL_BASE: u64 = u64::MAX - 15;

/// A decoded `user_data`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token {
    /// The operation kind.
    pub kind: Kind,
    /// Generation of the slot when the operation was submitted (24 bits).
    pub generation: u32,
    /// Slot in the owner's slab.
    pub slot: u32,
}

const GEN_MASK: u32 = (1 << 24) - 1;

impl Token {
    /// A token; the generation is truncated to 24 bits (wrapping after 16 M reuses of one
    /// slot, far beyond any op's lifetime).
    pub fn new(kind: Kind, generation: u32, slot: u32) -> Token {
        Token {
            kind,
            generation: generation & GEN_MASK,
            slot,
        }
    }

    /// Packs into `user_data`.
    pub fn encode(self) -> u64 {
        (u64::from(self.kind as u8) << 56)
            | (u64::from(self.generation & GEN_MASK) << 32)
            | u64::from(self.slot)
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
            slot: v as u32,
        })
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
        ] {
            for (generation, slot) in [(0, 0), (1, 7), (GEN_MASK, u32::MAX), (12345, 999_999)] {
                let t = Token::new(kind, generation, slot);
                assert_eq!(Token::decode(t.encode()), Some(t));
                assert!(t.encode() < SENTINEL_BASE);
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
}
