//! The client's address behind a reverse proxy: the PROXY protocol header a proxy puts
//! in front of a connection (`--proxy-protocol`), and `X-Forwarded-For` from proxies we
//! trust (`--trusted-proxy`).
//!
//! Both are only as honest as whoever sent them, so neither is believed from just
//! anyone:
//!
//! - A PROXY header is required on *every* connection of a listener with
//!   `--proxy-protocol`, and a connection without a valid one is closed. A client that
//!   reaches such a listener directly cannot forge its address by sending one, because
//!   the listener must only be reachable by the proxy (the same rule HAProxy's
//!   `accept-proxy` and nginx's `listen ... proxy_protocol` state).
//! - `X-Forwarded-For` is read only when the TCP peer is a trusted proxy, and then from
//!   the right: each proxy appends the address it saw, so the rightmost address that
//!   is not one of ours is the first one no trusted proxy vouches for ([`forwarded_client`]).
//!
//! Spec: "The PROXY protocol, Versions 1 & 2" (haproxy.org, `proxy-protocol.txt`),
//! §2.1 (v1, text) and §2.2 (v2, binary).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::Parsed;

/// The 12 bytes that open a v2 header (§2.2): chosen so that no HTTP request, TLS
/// record or v1 header starts with them.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// Longest v1 header (§2.1: "a 108-byte buffer is always enough to store all the line
/// and a trailing zero"): `PROXY UNKNOWN` with two full IPv6 addresses and ports.
pub const V1_MAX: usize = 107;

/// Longest v2 address block plus TLVs we hold for (the 16-byte fixed part comes on
/// top). The spec allows 65,535; addresses take at most 216 (AF_UNIX) and what HAProxy
/// and nginx add as TLVs (ALPN, authority, unique id, TLS details) fits in a few
/// hundred, so 4 KiB bounds what a connection can make us buffer before its header is
/// complete without refusing a real proxy.
pub const V2_MAX_BLOCK: usize = 4096;

/// What a PROXY header said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyHeader {
    /// The original client's address and port; `None` when the header carries none: a
    /// v2 `LOCAL` command (the proxy's own health check), an unspecified or `AF_UNIX`
    /// family, or v1 `UNKNOWN`. The TCP peer's address stands then.
    pub source: Option<SocketAddr>,
}

/// Why a PROXY header was refused: the connection is closed without a reply (its
/// peer is a proxy that sent garbage, or a client that should not reach this port).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyError {
    /// Neither the v2 signature nor `PROXY ` (§2.1, §2.2).
    Signature,
    /// v2: a version other than 2, or a command other than LOCAL and PROXY (§2.2).
    Version,
    /// v2: an address family or transport we do not take (UDP), or an address block
    /// shorter than its family needs; v1: a protocol other than TCP4, TCP6, UNKNOWN.
    Family,
    /// v1: a malformed address or port, or one of the wrong family.
    Address,
    /// v1 without CRLF in [`V1_MAX`] bytes; v2 longer than [`V2_MAX_BLOCK`].
    TooLong,
}

/// Parses a PROXY header (v1 or v2) from the start of `buf`.
///
/// `Partial` consumes nothing: call again with the same bytes plus more. Refuses as
/// early as the bytes allow (the first byte that cannot start a header), so a client
/// that speaks HTTP to a PROXY listener is refused on its first segment. Total over
/// arbitrary input: never panics.
pub fn parse(buf: &[u8]) -> Result<Parsed<ProxyHeader>, ProxyError> {
    let n = buf.len().min(V2_SIGNATURE.len());
    if buf[..n] == V2_SIGNATURE[..n] {
        return if n < V2_SIGNATURE.len() {
            Ok(Parsed::Partial)
        } else {
            parse_v2(buf)
        };
    }
    let n = buf.len().min(6);
    if buf[..n] == b"PROXY "[..n] {
        return if n < 6 {
            Ok(Parsed::Partial)
        } else {
            parse_v1(buf)
        };
    }
    Err(ProxyError::Signature)
}

/// §2.2: signature, version and command, family and transport, a big-endian length,
/// then that many bytes: addresses, then TLVs (ignored).
fn parse_v2(buf: &[u8]) -> Result<Parsed<ProxyHeader>, ProxyError> {
    if buf.len() < 16 {
        // The version byte alone can already be refused.
        if let Some(&v) = buf.get(12) {
            check_v2_version(v)?;
        }
        return Ok(Parsed::Partial);
    }
    let local = check_v2_version(buf[12])?;
    let (family, transport) = (buf[13] >> 4, buf[13] & 0x0f);
    let len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if len > V2_MAX_BLOCK {
        return Err(ProxyError::TooLong);
    }
    let Some(block) = buf.get(16..16 + len) else {
        return Ok(Parsed::Partial);
    };
    let consumed = 16 + len;
    // LOCAL: "the receiver must accept this connection as valid and must use the real
    // connection endpoints and discard the protocol block including the family".
    if local {
        return Ok(Parsed::Complete {
            value: ProxyHeader { source: None },
            consumed,
        });
    }
    // A stream (1) or unspecified (0) transport; datagrams (2) are not ours.
    if transport > 1 {
        return Err(ProxyError::Family);
    }
    let source = match family {
        // AF_UNSPEC: "the receiver should ... use the real connection endpoints".
        0 => None,
        // AF_INET: src 4, dst 4, src port 2, dst port 2.
        1 => {
            let b: &[u8; 12] = block
                .get(..12)
                .and_then(|b| b.try_into().ok())
                .ok_or(ProxyError::Family)?;
            let ip = Ipv4Addr::new(b[0], b[1], b[2], b[3]);
            Some(SocketAddr::from((ip, u16::from_be_bytes([b[8], b[9]]))))
        }
        // AF_INET6: src 16, dst 16, src port 2, dst port 2.
        2 => {
            let b: &[u8; 36] = block
                .get(..36)
                .and_then(|b| b.try_into().ok())
                .ok_or(ProxyError::Family)?;
            let mut ip = [0; 16];
            ip.copy_from_slice(&b[..16]);
            let ip = Ipv6Addr::from(ip);
            Some(SocketAddr::from((ip, u16::from_be_bytes([b[32], b[33]]))))
        }
        // AF_UNIX: a path, not an address we can show or match; the peer stands.
        3 => None,
        _ => return Err(ProxyError::Family),
    };
    Ok(Parsed::Complete {
        value: ProxyHeader { source },
        consumed,
    })
}

/// Version 2 and a known command; returns whether it is LOCAL.
fn check_v2_version(v: u8) -> Result<bool, ProxyError> {
    match v {
        0x20 => Ok(true),
        0x21 => Ok(false),
        _ => Err(ProxyError::Version),
    }
}

/// §2.1: `PROXY TCP4|TCP6 SRC DST SPORT DPORT\r\n`, or `PROXY UNKNOWN ...\r\n`, one
/// space between fields, at most [`V1_MAX`] bytes.
fn parse_v1(buf: &[u8]) -> Result<Parsed<ProxyHeader>, ProxyError> {
    let window = &buf[..buf.len().min(V1_MAX)];
    let Some(end) = window.windows(2).position(|w| w == b"\r\n") else {
        return if buf.len() >= V1_MAX {
            Err(ProxyError::TooLong)
        } else {
            Ok(Parsed::Partial)
        };
    };
    let consumed = end + 2;
    let line = std::str::from_utf8(&buf[6..end]).map_err(|_| ProxyError::Address)?;
    let mut fields = line.split(' ');
    let v6 = match fields.next() {
        Some("TCP4") => false,
        Some("TCP6") => true,
        // "the receiver must ignore anything presented before the CRLF".
        Some("UNKNOWN") => {
            return Ok(Parsed::Complete {
                value: ProxyHeader { source: None },
                consumed,
            });
        }
        _ => return Err(ProxyError::Family),
    };
    let mut next = || fields.next().ok_or(ProxyError::Address);
    let src: IpAddr = next()?.parse().map_err(|_| ProxyError::Address)?;
    let dst: IpAddr = next()?.parse().map_err(|_| ProxyError::Address)?;
    let sport = parse_port(next()?)?;
    parse_port(next()?)?;
    if fields.next().is_some() || src.is_ipv6() != v6 || dst.is_ipv6() != v6 {
        return Err(ProxyError::Address);
    }
    Ok(Parsed::Complete {
        value: ProxyHeader {
            source: Some(SocketAddr::new(src, sport)),
        },
        consumed,
    })
}

/// A v1 port: 1 to 5 digits, at most 65535 (no sign, no spaces).
fn parse_port(s: &str) -> Result<u16, ProxyError> {
    if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ProxyError::Address);
    }
    s.parse().map_err(|_| ProxyError::Address)
}

/// An address range, `10.0.0.0/8`, `fd00::/8` or one address (`192.0.2.1`, a /32).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `ADDR` or `ADDR/PREFIX`. Host bits set under the prefix (`10.1.2.3/8`) are
    /// refused: they usually mean a typo for a narrower range.
    pub fn parse(s: &str) -> Result<Cidr, String> {
        const EXPECTED: &str = "expected an address or CIDR range like 10.0.0.0/8 or fd00::/8";
        let (ip, prefix) = match s.split_once('/') {
            Some((ip, p)) => (ip, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = ip.parse().map_err(|_| EXPECTED.to_owned())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) if !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()) => p
                .parse::<u8>()
                .ok()
                .filter(|&p| p <= max)
                .ok_or_else(|| EXPECTED.to_owned())?,
            Some(_) => return Err(EXPECTED.to_owned()),
        };
        let cidr = Cidr { addr, prefix };
        if cidr.network() != mask(bits(addr), cidr.width(), cidr.width()) {
            return Err(format!("{EXPECTED} (host bits set under /{prefix})"));
        }
        Ok(cidr)
    }

    /// Does the range hold `ip`? IPv4 addresses seen as IPv4-mapped IPv6 (a dual-stack
    /// listener's view, `::ffff:10.0.0.1`) count as IPv4.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_ipv4() == self.addr.is_ipv4()
            && mask(bits(ip), self.width(), self.prefix) == self.network()
    }

    fn width(&self) -> u8 {
        if self.addr.is_ipv4() { 32 } else { 128 }
    }

    fn network(&self) -> u128 {
        mask(bits(self.addr), self.width(), self.prefix)
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

fn bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

/// The top `prefix` bits of a `width`-bit address.
fn mask(bits: u128, width: u8, prefix: u8) -> u128 {
    if prefix == 0 {
        return 0;
    }
    let keep = u128::MAX << (128 - u32::from(prefix));
    (bits << (128 - u32::from(width))) & keep
}

/// The client's address for a request that came from `peer` with `x_forwarded_for`
/// (its field lines joined by commas, as the head parser keeps them).
///
/// `peer` itself unless it is in `trusted`. Otherwise the list is read from the right,
/// where each trusted proxy appended the address it saw: trusted entries are skipped,
/// and the first one that is not trusted is the client. An entry that is not an
/// address stops the walk at the last trusted hop (whoever wrote it is not vouched
/// for); a list of trusted addresses only yields its leftmost. Entries may carry a
/// port (`192.0.2.1:4711`, `[2001:db8::1]:4711`), which is dropped.
pub fn forwarded_client(peer: IpAddr, x_forwarded_for: Option<&str>, trusted: &[Cidr]) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    let mut client = peer.to_canonical();
    if !is_trusted(client) {
        return client;
    }
    let Some(list) = x_forwarded_for else {
        return client;
    };
    for entry in list.rsplit(',') {
        let Some(ip) = parse_forwarded_ip(entry.trim_matches([' ', '\t'])) else {
            break;
        };
        client = ip.to_canonical();
        if !is_trusted(client) {
            break;
        }
    }
    client
}

/// `192.0.2.1`, `192.0.2.1:4711`, `2001:db8::1`, `[2001:db8::1]`, `[2001:db8::1]:4711`.
fn parse_forwarded_ip(s: &str) -> Option<IpAddr> {
    if let Ok(ip) = s.parse() {
        return Some(ip);
    }
    if let Some(rest) = s.strip_prefix('[') {
        let (ip, _) = rest.split_once(']')?;
        return ip.parse::<Ipv6Addr>().ok().map(IpAddr::V6);
    }
    s.parse::<std::net::SocketAddrV4>()
        .ok()
        .map(|a| IpAddr::V4(*a.ip()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(cmd: u8, fam: u8, block: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.push(cmd);
        h.push(fam);
        h.extend_from_slice(&(block.len() as u16).to_be_bytes());
        h.extend_from_slice(block);
        h
    }

    fn v2_inet(src: [u8; 4], sport: u16) -> Vec<u8> {
        let mut b = src.to_vec();
        b.extend_from_slice(&[127, 0, 0, 1]);
        b.extend_from_slice(&sport.to_be_bytes());
        b.extend_from_slice(&8080u16.to_be_bytes());
        // A TLV (PP2_TYPE_UNIQUE_ID, 3 bytes), which is skipped.
        b.extend_from_slice(&[0x05, 0, 3, b'a', b'b', b'c']);
        v2(0x21, 0x11, &b)
    }

    fn complete(buf: &[u8]) -> (Option<SocketAddr>, usize) {
        match parse(buf) {
            Ok(Parsed::Complete { value, consumed }) => (value.source, consumed),
            other => panic!("{buf:?}: {other:?}"),
        }
    }

    #[test]
    fn v2_inet_and_inet6() {
        let mut h = v2_inet([192, 0, 2, 7], 4711);
        let len = h.len();
        h.extend_from_slice(b"GET / HTTP/1.1\r\n");
        assert_eq!(complete(&h), (Some("192.0.2.7:4711".parse().unwrap()), len));

        let mut b = Vec::new();
        b.extend_from_slice(&"2001:db8::5".parse::<Ipv6Addr>().unwrap().octets());
        b.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        b.extend_from_slice(&[0x12, 0x67, 0x1f, 0x90]);
        let h = v2(0x21, 0x21, &b);
        assert_eq!(
            complete(&h),
            (Some("[2001:db8::5]:4711".parse().unwrap()), 16 + 36)
        );
    }

    #[test]
    fn v2_local_unspec_and_unix_keep_the_peer() {
        // LOCAL: whatever follows is discarded, even an address block.
        let h = v2(0x20, 0x11, &[1; 12]);
        assert_eq!(complete(&h), (None, 28));
        assert_eq!(complete(&v2(0x20, 0x00, &[])), (None, 16));
        assert_eq!(complete(&v2(0x21, 0x00, &[])), (None, 16));
        assert_eq!(complete(&v2(0x21, 0x31, &[0; 216])), (None, 232));
    }

    #[test]
    fn v2_refusals() {
        assert_eq!(parse(&v2(0x22, 0x11, &[0; 12])), Err(ProxyError::Version));
        assert_eq!(parse(&v2(0x11, 0x11, &[0; 12])), Err(ProxyError::Version));
        assert_eq!(
            parse(&v2(0x21, 0x12, &[0; 12])),
            Err(ProxyError::Family),
            "UDP"
        );
        assert_eq!(
            parse(&v2(0x21, 0x11, &[0; 11])),
            Err(ProxyError::Family),
            "short"
        );
        assert_eq!(
            parse(&v2(0x21, 0x21, &[0; 12])),
            Err(ProxyError::Family),
            "short"
        );
        assert_eq!(parse(&v2(0x21, 0x41, &[0; 12])), Err(ProxyError::Family));
        let mut h = V2_SIGNATURE.to_vec();
        h.extend_from_slice(&[0x21, 0x11, 0x10, 0x01]);
        assert_eq!(parse(&h), Err(ProxyError::TooLong), "4097 announced");
        // Refused on the version byte, before the length arrives.
        let mut h = V2_SIGNATURE.to_vec();
        h.push(0x31);
        assert_eq!(parse(&h), Err(ProxyError::Version));
    }

    #[test]
    fn v1() {
        let h = b"PROXY TCP4 192.0.2.7 127.0.0.1 4711 8080\r\nGET /";
        assert_eq!(complete(h), (Some("192.0.2.7:4711".parse().unwrap()), 42));
        let h = b"PROXY TCP6 2001:db8::5 ::1 4711 8080\r\n";
        assert_eq!(
            complete(h),
            (Some("[2001:db8::5]:4711".parse().unwrap()), h.len())
        );
        let h = b"PROXY UNKNOWN whatever\r\n";
        assert_eq!(complete(h), (None, h.len()));
        assert_eq!(complete(b"PROXY UNKNOWN\r\n"), (None, 15));
        // The longest legal headers are accepted.
        let full = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
        let h = format!("PROXY TCP6 {full} {full} 65535 65535\r\n");
        assert_eq!(complete(h.as_bytes()).1, 104);
        let h = format!("PROXY UNKNOWN {full} {full} 65535 65535\r\n");
        assert_eq!(h.len(), V1_MAX);
        assert_eq!(complete(h.as_bytes()), (None, V1_MAX));
    }

    #[test]
    fn v1_refusals() {
        for bad in [
            &b"PROXY TCP4 192.0.2.7 127.0.0.1 4711\r\n"[..],
            b"PROXY TCP4 192.0.2.7 127.0.0.1 4711 8080 9\r\n",
            b"PROXY TCP4 192.0.2.7  127.0.0.1 4711 8080\r\n",
            b"PROXY TCP4 2001:db8::5 127.0.0.1 4711 8080\r\n",
            b"PROXY TCP6 192.0.2.7 127.0.0.1 4711 8080\r\n",
            b"PROXY TCP4 192.0.2.7 127.0.0.1 65536 8080\r\n",
            b"PROXY TCP4 192.0.2.7 127.0.0.1 +4711 8080\r\n",
            b"PROXY TCP4 192.0.2.999 127.0.0.1 4711 8080\r\n",
        ] {
            assert_eq!(
                parse(bad),
                Err(ProxyError::Address),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(parse(b"PROXY UDP4 a b 1 2\r\n"), Err(ProxyError::Family));
        assert_eq!(parse(b"PROXY tcp4 a b 1 2\r\n"), Err(ProxyError::Family));
        assert_eq!(parse(&[b'P'; 200][..]), Err(ProxyError::Signature));
        let mut long = b"PROXY UNKNOWN ".to_vec();
        long.resize(V1_MAX, b'x');
        assert_eq!(parse(&long), Err(ProxyError::TooLong));
        long.truncate(V1_MAX - 1);
        assert_eq!(parse(&long), Ok(Parsed::Partial));
    }

    /// A client that speaks HTTP (or TLS) to a PROXY listener is refused on its first
    /// byte, and nothing that is not a header is ever Partial for long.
    #[test]
    fn anything_else_is_refused_at_once() {
        for bad in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"\x16\x03\x01",
            b"\r\n\r\nX",
            b"PROXY\t",
        ] {
            assert_eq!(parse(bad), Err(ProxyError::Signature), "{bad:?}");
        }
        assert_eq!(parse(b""), Ok(Parsed::Partial));
        assert_eq!(parse(b"PROX"), Ok(Parsed::Partial));
        assert_eq!(parse(b"\r\n\r\n\0"), Ok(Parsed::Partial));
    }

    /// Chunking: every prefix of a header is Partial (consuming nothing), and the whole
    /// is the one-shot result (the driver may receive it one byte at a time).
    #[test]
    fn every_prefix_is_partial() {
        let v1 = b"PROXY TCP4 192.0.2.7 127.0.0.1 4711 8080\r\n".to_vec();
        for h in [v2_inet([10, 1, 2, 3], 9), v1] {
            for cut in 0..h.len() {
                assert_eq!(parse(&h[..cut]), Ok(Parsed::Partial), "{cut} of {h:?}");
            }
            assert!(
                matches!(parse(&h), Ok(Parsed::Complete { consumed, .. }) if consumed == h.len())
            );
        }
    }

    #[test]
    fn total_over_arbitrary_input() {
        let mut rng = crate::proto::rand::Rng::new(7);
        for _ in 0..20_000 {
            let len = (rng.next_u64() % 64) as usize;
            let mut buf: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
            // Half of them start like a header, to get past the signature.
            let prefix: &[u8] = match rng.next_u64() % 3 {
                0 => &V2_SIGNATURE,
                1 => b"PROXY TCP4 ",
                _ => b"",
            };
            buf.splice(0..0, prefix.iter().copied());
            if let Ok(Parsed::Complete { consumed, .. }) = parse(&buf) {
                assert!(consumed <= buf.len());
            }
        }
    }

    #[test]
    fn cidrs() {
        let c = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(c.contains("10.255.0.1".parse().unwrap()));
        assert!(c.contains("::ffff:10.0.0.1".parse().unwrap()), "mapped");
        assert!(!c.contains("11.0.0.1".parse().unwrap()));
        assert!(!c.contains("::a00:1".parse().unwrap()), "not mapped");
        let one = Cidr::parse("192.0.2.1").unwrap();
        assert_eq!(one.to_string(), "192.0.2.1/32");
        assert!(one.contains("192.0.2.1".parse().unwrap()));
        assert!(!one.contains("192.0.2.2".parse().unwrap()));
        let v6 = Cidr::parse("fd00::/8").unwrap();
        assert!(v6.contains("fd12::1".parse().unwrap()));
        assert!(!v6.contains("fe80::1".parse().unwrap()));
        let all = Cidr::parse("0.0.0.0/0").unwrap();
        assert!(all.contains("203.0.113.9".parse().unwrap()));
        assert!(
            Cidr::parse("::/0")
                .unwrap()
                .contains("::1".parse().unwrap())
        );
        for bad in [
            "",
            "10.0.0.0/",
            "10.0.0.0/33",
            "::/129",
            "10.1.0.0/8",
            "x/8",
            "10.0.0.0/+8",
            "10.0.0.0/08x",
        ] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn forwarded_for_is_read_from_the_right_and_only_from_trusted_peers() {
        let trusted = [
            Cidr::parse("10.0.0.0/8").unwrap(),
            Cidr::parse("fd00::/8").unwrap(),
        ];
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let f = |peer: &str, xff: Option<&str>| forwarded_client(ip(peer), xff, &trusted);
        // A client's own header is never believed.
        assert_eq!(f("203.0.113.9", Some("198.51.100.1")), ip("203.0.113.9"));
        // Through one proxy.
        assert_eq!(f("10.0.0.2", Some("198.51.100.1")), ip("198.51.100.1"));
        assert_eq!(f("10.0.0.2", None), ip("10.0.0.2"));
        // The client forged an entry; the proxy appended the address it saw.
        assert_eq!(
            f("10.0.0.2", Some("1.2.3.4, 198.51.100.1")),
            ip("198.51.100.1")
        );
        // Two trusted proxies, repeated field lines joined.
        assert_eq!(
            f("10.0.0.2", Some("1.2.3.4, 198.51.100.1, 10.0.0.3")),
            ip("198.51.100.1")
        );
        assert_eq!(
            f("10.0.0.2", Some("10.9.9.9, 10.0.0.3")),
            ip("10.9.9.9"),
            "all ours"
        );
        // Garbage stops at the last trusted hop.
        assert_eq!(f("10.0.0.2", Some("198.51.100.1, unknown")), ip("10.0.0.2"));
        assert_eq!(
            f("10.0.0.2", Some("198.51.100.1, 10.0.0.3, x")),
            ip("10.0.0.2")
        );
        assert_eq!(f("10.0.0.2", Some("")), ip("10.0.0.2"));
        // Ports and brackets; IPv6 peers; mapped peers.
        assert_eq!(f("10.0.0.2", Some("198.51.100.1:4711")), ip("198.51.100.1"));
        assert_eq!(f("fd00::2", Some("[2001:db8::1]:4711")), ip("2001:db8::1"));
        assert_eq!(f("fd00::2", Some("2001:db8::1")), ip("2001:db8::1"));
        assert_eq!(
            f("::ffff:10.0.0.2", Some("198.51.100.1")),
            ip("198.51.100.1")
        );
        assert_eq!(
            f("10.0.0.2", Some("::ffff:198.51.100.1")),
            ip("198.51.100.1")
        );
        // No trusted proxies: the peer, always.
        assert_eq!(
            forwarded_client(ip("10.0.0.2"), Some("1.2.3.4"), &[]),
            ip("10.0.0.2")
        );
    }
}
