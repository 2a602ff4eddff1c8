//! The crate's one pseudo-random generator and its one bit mixer.
//!
//! Nothing here reads an entropy source or a clock: the caller seeds the generator, so
//! the protocol core stays deterministic and its tests repeatable. What it is used for
//! needs spread, not secrecy: WebSocket masks (RFC 6455 §5.3 asks that intermediaries
//! cannot predict them, not that they be cryptographic), handshake keys, backoff jitter,
//! split points in chunking tests.

/// A small fast PRNG (xorshift64*, Vigna 2016): one `u64` of state, full period
/// 2^64 - 1, and a multiply that fixes plain xorshift's weak low bits.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from any seed (0 is remapped: the all-zero state would stay zero).
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9e37_79b9_7f4a_7c15 | 1)
    }

    /// The next value.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// The splitmix64 finaliser: a bijection on `u64` whose every output bit depends on
/// every input bit, so a small or sequential input (a connection counter, a clock
/// reading) spreads over the whole range. A hash, not a generator: same input, same
/// output.
pub fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Any seed, zero included, gives a stream that moves; different seeds differ.
    #[test]
    fn seeds() {
        for seed in [0, 1, 0x9e37_79b9_7f4a_7c15, 0x9e37_79b9_7f4a_7c14, u64::MAX] {
            let mut r = Rng::new(seed);
            let (a, b) = (r.next_u64(), r.next_u64());
            assert!(a != b && a != 0, "seed {seed:#x}");
        }
        assert_ne!(Rng::new(1).next_u64(), Rng::new(2).next_u64());
    }

    /// Every bit of the output is set about half the time.
    #[test]
    fn bits_are_balanced() {
        let mut r = Rng::new(3);
        let n = 20_000;
        let mut ones = [0u32; 64];
        for _ in 0..n {
            let v = r.next_u64();
            for (i, c) in ones.iter_mut().enumerate() {
                *c += (v >> i & 1) as u32;
            }
        }
        for (i, c) in ones.iter().enumerate() {
            let share = f64::from(*c) / f64::from(n);
            assert!((share - 0.5).abs() < 0.02, "bit {i}: {share}");
        }
    }

    /// Neighbouring inputs land far apart: about half the output bits flip.
    #[test]
    fn mix_avalanches() {
        assert_eq!(mix(0), 0);
        let flips: u32 = (1..1000u64)
            .map(|i| (mix(i) ^ mix(i + 1)).count_ones())
            .sum();
        let mean = f64::from(flips) / 999.0;
        assert!((mean - 32.0).abs() < 2.0, "{mean} bits flip on average");
    }
}
