//! The server's configuration: one [`Config`] struct, filled from its defaults, then a
//! TOML file (`--config FILE`), then command-line flags (DESIGN.md "Command line").
//!
//! Every value goes through the same parser whichever source it comes from ([`SHARDS`],
//! [`PING_INTERVAL`], [`parse_listen`], ...), so a bad value gets the same one-line
//! message, naming the flag and the accepted values, on the command line and in a file:
//!
//! ```text
//! $ ringpush --ping-interval abc
//! ringpush: invalid value 'abc' for '--ping-interval <D>': expected a duration from 1ms to 24h, like 500ms, 30s or 2m
//! $ ringpush --config ringpush.toml          # with ping-interval = "abc" on line 3
//! ringpush: --ping-interval: expected a duration from 1ms to 24h, like 500ms, 30s or 2m, got "abc" (ringpush.toml line 3)
//! ```
//!
//! The TOML keys are the flag names without `--`; a repeatable flag is an array:
//!
//! ```toml
//! listen = "0.0.0.0:8080"
//! ping-interval = "20s"
//! history = 4096
//! allowed-origin = ["https://app.example.com"]
//! ```

use std::fmt::{self, Write as _};
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::{Spanned, Value};

use crate::proto::conn::ConnConfig;
use crate::proto::deflate::{CompressionMode, DEFAULT_MIN_BYTES};
use crate::proto::http::parse_duration;
use crate::proto::limits::{DEFAULT_MAX_MESSAGE_BYTES, Limits, MAX_FRAME_HEADER};
use crate::proto::proxy::Cidr;

/// Everything `ringpush serve` can be told.
///
/// Build it with [`Config::from_sources`] (what the CLI does) or from [`Config::default`]
/// and then [`Config::validate`] it: the server assumes every value is in range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Address to bind, IPv4 or IPv6; port 0 picks a free port. Default `127.0.0.1:8080`:
    /// loopback, so a first run exposes nothing to the network.
    pub listen: SocketAddr,
    /// Shards: threads, each with its own ring and SO_REUSEPORT listener, pinned to one
    /// CPU. Default: the CPUs in the process's affinity mask ([`available_cpus`]), so
    /// `taskset` and cpusets are respected. More shards than CPUs only adds context
    /// switches; fewer leaves cores idle. 1 to [`MAX_SHARDS`].
    pub shards: usize,
    /// Connection cap; beyond it new connections get 503 + Retry-After and existing ones
    /// are unaffected. Default `None`: sized at startup by the server from RLIMIT_NOFILE
    /// and the fixed-file tables the kernel allows. Set it to protect memory: each idle
    /// connection costs about 1 KiB of user space plus the kernel's socket buffers.
    pub max_connections: Option<usize>,
    /// A WebSocket silent this long gets a ping. Default 30 s: under the 60 s idle
    /// timeout of common proxies and load balancers (nginx `proxy_read_timeout`, AWS ALB),
    /// while at a million connections it costs ~33,000 pings/s, a small fraction of one
    /// core. Shorter finds dead peers sooner at the price of more wake-ups.
    pub ping_interval: Duration,
    /// No frame at all this long after a ping closes the connection. Default 10 s: a dead
    /// peer is found within 40 s of its last byte, yet a congested mobile link has time
    /// to answer.
    pub pong_timeout: Duration,
    /// Period of the SSE comment heartbeat. Default 15 s: under the 30-60 s idle timeouts
    /// of proxies that would otherwise cut a quiet stream; each heartbeat is a few bytes.
    pub sse_heartbeat: Duration,
    /// Base of the SSE `retry:` hint; each client gets a value uniform in
    /// `[base/2, base*3/2)` so that after a restart the reconnects spread over a whole
    /// `base` instead of arriving in the same millisecond. Default 3 s, the browsers' own
    /// default.
    pub sse_retry: Duration,
    /// A request head (or publish body) not complete this long after the connection
    /// opened, or after its previous response, closes the connection. Default 10 s:
    /// generous for real clients, short enough that slowloris-style clients, each holding
    /// a slot for free, cannot pile up.
    pub handshake_timeout: Duration,
    /// Largest WebSocket message (close 1009 beyond) and publish body (413). Default
    /// 1 MiB.
    ///
    /// # Warning
    /// Each connection may buffer this much while a message arrives, so the worst-case
    /// memory is `connections * max_message_bytes`.
    pub max_message_bytes: usize,
    /// Unsent bytes per connection before the slow-consumer policy closes it (see
    /// `server::outbox`). Default 4 MiB: four full-size messages of slack for a client on
    /// a slow link. Lower it when many clients may be slow; keep it above
    /// `max_message_bytes` + 14, or every full-size message closes its subscribers
    /// ([`Config::warnings`] says so).
    pub max_outbox_bytes: usize,
    /// How long a connection's outbox may take to drain once it reached
    /// `max_outbox_bytes` (a cap's worth sent, or everything; a dip just under the cap
    /// does not count: see `server::outbox`) before it is cut as a slow consumer (WebSocket close 1008). Default 10 s: an honest client on a
    /// congested link catches up well within it, a hostile one holds its memory no
    /// longer.
    pub outbox_timeout: Duration,
    /// Events kept per topic for replay to reconnecting clients. Default 1024: a client
    /// gone for a few seconds on a busy topic still resumes exactly. Memory is about
    /// `topics * history * average event size`. 0 disables replay: every reconnect gets
    /// `event: reset`.
    pub history: usize,
    /// A topic with no subscriber and no publish for this long is forgotten: its
    /// history and its numbering go, and a client that comes back with an id from it gets
    /// `event: reset`. Default `None`: topics live as long as the server or until the
    /// memory budget needs their room, which suits a fixed set of topics; set it when
    /// topics come and go (one per user, per document).
    pub history_ttl: Option<Duration>,
    /// Memory for retained events and the topics themselves, all shards together (each
    /// gets an equal share). Past it the oldest events go first, those of topics nobody
    /// subscribes to before the others, and then topics with nothing left (see
    /// `pubsub::owner`). Default 128 MiB: a 1 GiB machine keeps most of its memory for
    /// connections, while 128 MiB holds over 400,000 small events. A client whose
    /// position was evicted gets `event: reset` and what is retained.
    pub history_memory: usize,
    /// If set, `POST /publish` requires `Authorization: Bearer <token>`. Default `None`:
    /// anyone who can reach the port may publish, which suits a loopback or private
    /// listener.
    pub publish_token: Option<String>,
    /// HS256 key for client tokens (also from the environment variable
    /// `RINGPUSH_JWT_SECRET`, which the process list does not show). With it or
    /// `jwt_public_key`, every topic needs a token (`proto::auth`). Default `None`:
    /// authorization off, any client may subscribe and publish.
    pub jwt_secret: Option<String>,
    /// A PEM public key for client tokens: RSA (RS256), EC P-256 (ES256) or Ed25519
    /// (EdDSA). Read at start; an unreadable or unusable file stops the server.
    pub jwt_public_key: Option<PathBuf>,
    /// If set, a token's `iss` must be this.
    pub jwt_issuer: Option<String>,
    /// `--tls-cert`: the PEM certificate chain (leaf first) of a listener that speaks
    /// TLS only; set with `tls_key`. Read at start (a bad file stops the server) and
    /// again on SIGHUP (a bad file is logged, the previous pair kept).
    pub tls_cert: Option<PathBuf>,
    /// `--tls-key`: the PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// If set, a token's `aud` must include this.
    pub jwt_audience: Option<String>,
    /// If set, `/metrics` and `/healthz` are served there and nowhere else (404 on the
    /// main port), so they need not be public. Default `None`: on the main port.
    pub admin_listen: Option<SocketAddr>,
    /// Origins (`https://app.example.com`) allowed to open a WebSocket or event stream;
    /// others get 403. Default empty: any origin, as a public push service wants. Requests
    /// without `Origin` (non-browser clients) are always allowed: the header only protects
    /// browsers' users.
    pub allowed_origins: Vec<String>,
    /// Graceful shutdown budget: after SIGTERM, connections get a close (1001) and this
    /// long to go before they are dropped. Default 10 s, within the grace period
    /// orchestrators give before SIGKILL (Kubernetes: 30 s).
    pub drain_timeout: Duration,
    /// Cluster mode: `redis://HOST:PORT/DB` of the Redis that numbers, keeps and carries
    /// every topic's events for all nodes (`crate::cluster`). Default `None`: one node,
    /// history in this process.
    pub redis: Option<String>,
    /// This node's name in logs, metrics and Redis client names. Default: the host name
    /// and the process id.
    pub node_id: Option<String>,
    /// Every connection to `listen` must start with a PROXY protocol header (v2, or v1
    /// text), which gives the client's address; a connection without a valid one is
    /// closed. Default off. Turn it on only when the port is reachable by the proxy
    /// alone (HAProxy `send-proxy-v2`, nginx stream `proxy_protocol on`): whoever
    /// reaches it may claim any address. The admin listener never expects one.
    pub proxy_protocol: bool,
    /// Peers whose `X-Forwarded-For` is believed: address ranges of the reverse proxies
    /// in front (`--trusted-proxy 10.0.0.0/8`, repeatable). The client is then the
    /// rightmost address in that header that is not one of them (`proto::proxy`).
    /// Default empty: the header is ignored and the TCP peer is the client, because a
    /// client can write anything there. The client's address is used by `access_log`,
    /// so far its one consumer: without the log this changes nothing
    /// ([`Config::warnings`] says so).
    pub trusted_proxies: Vec<Cidr>,
    /// One line on standard error per WebSocket or event stream opened and closed and
    /// per refused request, with the client's address (through the proxy, see
    /// `proxy_protocol` and `trusted_proxies`) and the TCP peer's. Default off: at a
    /// million connections a reconnect storm would be a million lines. On, each
    /// connection costs one more ring operation and two system calls to learn its
    /// peer's address (`IORING_OP_FIXED_FD_INSTALL`, `getpeername`, `close`), and 96
    /// bytes while it lives.
    ///
    /// # Warning
    /// Refusals are logged too, so a client that is refused over and over writes a
    /// line each time; keep it off where the log is not rotated.
    pub access_log: bool,
    /// permessage-deflate (RFC 7692). Default `shared`: accepted when a client offers it,
    /// without context takeover either way, so a published message is compressed once
    /// per shard and the same frame goes to every subscriber that agreed, and a
    /// connection keeps no compressor state (one 256 KiB compressor per shard, not per
    /// connection). `off` declines every offer. (`dedicated`, a compressor per
    /// connection with context takeover, is not implemented.)
    pub compression: CompressionMode,
    /// Messages shorter than this go out uncompressed (RSV1 clear) even to clients that
    /// agreed to compression. Default 128 bytes: below about 100 bytes of JSON deflate
    /// saves a handful of bytes for nearly the CPU of a 1 KB message (benches/RESULTS.md).
    pub compression_min_bytes: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            shards: available_cpus(),
            max_connections: None,
            ping_interval: Duration::from_secs(30),
            pong_timeout: Duration::from_secs(10),
            sse_heartbeat: Duration::from_secs(15),
            sse_retry: Duration::from_secs(3),
            handshake_timeout: Duration::from_secs(10),
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            max_outbox_bytes: 4 * 1024 * 1024,
            outbox_timeout: Duration::from_secs(10),
            history: 1024,
            history_ttl: None,
            history_memory: 128 * 1024 * 1024,
            publish_token: None,
            jwt_secret: None,
            jwt_public_key: None,
            tls_cert: None,
            tls_key: None,
            jwt_issuer: None,
            jwt_audience: None,
            admin_listen: None,
            allowed_origins: Vec::new(),
            drain_timeout: Duration::from_secs(10),
            redis: None,
            node_id: None,
            proxy_protocol: false,
            trusted_proxies: Vec::new(),
            access_log: false,
            compression: CompressionMode::Shared,
            compression_min_bytes: DEFAULT_MIN_BYTES,
        }
    }
}

/// Most shards: `CPU_SETSIZE`, the CPUs a `cpu_set_t` can name, since every shard is
/// pinned to one of them.
pub const MAX_SHARDS: usize = 1024;

/// The CPUs this process may run on (its affinity mask, which `taskset` and cpusets
/// narrow), at most [`MAX_SHARDS`]; the default shard count.
///
/// Not `available_parallelism` first: that also rounds a cgroup CPU quota, but shards are
/// pinned to CPUs of the mask, so the mask is the count that matches them. It is the
/// fallback when the mask cannot be read (more than 1024 CPUs).
pub fn available_cpus() -> usize {
    affinity_cpus()
        .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
        .unwrap_or(1)
        .clamp(1, MAX_SHARDS)
}

fn affinity_cpus() -> Option<usize> {
    crate::sys::affinity_cpu_count()
}

/// A bad configuration value: which flag (TOML keys are the flag names without `--`)
/// and what is wrong, including the accepted values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The flag, e.g. `--ping-interval`; `--config` for a file that cannot be read or
    /// parsed (an unknown key, bad TOML).
    pub flag: &'static str,
    /// What is accepted and what was given, on one line; for a value from a file, ends
    /// with the file and line.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.flag, self.message)
    }
}

impl std::error::Error for ConfigError {}

/// The accepted values of a whole-number setting, shared by the flag parser, the TOML
/// loader and [`Config::validate`] so each reports the same range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CountRange {
    /// The flag it belongs to.
    pub flag: &'static str,
    /// Smallest accepted value.
    pub min: usize,
    /// Largest accepted value; `usize::MAX` means no upper bound.
    pub max: usize,
}

impl CountRange {
    /// "expected a whole number from 1 to 1024".
    pub fn expected(self) -> String {
        if self.max == usize::MAX {
            format!("expected a whole number of at least {}", self.min)
        } else {
            format!("expected a whole number from {} to {}", self.min, self.max)
        }
    }

    /// Parses decimal digits (no sign, no separators) within the range; the error is
    /// [`CountRange::expected`]. Fits clap's `value_parser`.
    pub fn parse(self, text: &str) -> Result<usize, String> {
        Some(text)
            .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|t| t.parse().ok())
            .filter(|n| (self.min..=self.max).contains(n))
            .ok_or_else(|| self.expected())
    }

    /// `n` if it is in range.
    pub fn check(self, n: usize) -> Result<usize, ConfigError> {
        if (self.min..=self.max).contains(&n) {
            Ok(n)
        } else {
            Err(ConfigError {
                flag: self.flag,
                message: format!("{}, got {n}", self.expected()),
            })
        }
    }
}

/// The accepted values of a duration setting, shared like [`CountRange`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationRange {
    /// The flag it belongs to.
    pub flag: &'static str,
    /// Shortest accepted value.
    pub min: Duration,
    /// Longest accepted value.
    pub max: Duration,
}

impl DurationRange {
    /// "expected a duration from 1ms to 24h, like 500ms, 30s or 2m".
    pub fn expected(self) -> String {
        format!(
            "expected a duration from {} to {}, like 500ms, 30s or 2m",
            format_duration(self.min),
            format_duration(self.max)
        )
    }

    /// Parses `500ms`, `30s`, `2m`, `1h` or plain seconds
    /// ([`crate::proto::http::parse_duration`]) within the range. Fits clap's
    /// `value_parser`.
    pub fn parse(self, text: &str) -> Result<Duration, String> {
        parse_duration(text)
            .filter(|d| (self.min..=self.max).contains(d))
            .ok_or_else(|| self.expected())
    }

    /// `d` if it is in range.
    pub fn check(self, d: Duration) -> Result<Duration, ConfigError> {
        if (self.min..=self.max).contains(&d) {
            Ok(d)
        } else {
            Err(ConfigError {
                flag: self.flag,
                message: format!("{}, got {}", self.expected(), format_duration(d)),
            })
        }
    }
}

/// `--shards`: see [`MAX_SHARDS`].
pub const SHARDS: CountRange = CountRange {
    flag: "--shards",
    min: 1,
    max: MAX_SHARDS,
};
/// `--max-connections`: no upper bound; the server also caps it by what the kernel
/// allows.
pub const MAX_CONNECTIONS: CountRange = CountRange {
    flag: "--max-connections",
    min: 1,
    max: usize::MAX,
};
/// `--max-message-bytes`: at most 1 GiB, because a message is assembled in memory and
/// a WebSocket frame length beyond that is more likely an attack than a payload.
pub const MAX_MESSAGE_BYTES: CountRange = CountRange {
    flag: "--max-message-bytes",
    min: 1,
    max: 1 << 30,
};
/// `--max-outbox-bytes`: at least 1 KiB so protocol replies (a handshake response, a
/// close frame) always fit.
pub const MAX_OUTBOX_BYTES: CountRange = CountRange {
    flag: "--max-outbox-bytes",
    min: 1024,
    max: usize::MAX,
};
/// `--compression-min-bytes`: 0 (compress everything) to 1 GiB (the largest message).
pub const COMPRESSION_MIN_BYTES: CountRange = CountRange {
    flag: "--compression-min-bytes",
    min: 0,
    max: 1 << 30,
};

/// Parses `--compression`: `off` or `shared`; `dedicated` is named and refused.
pub fn parse_compression(s: &str) -> Result<CompressionMode, String> {
    match s {
        "off" => Ok(CompressionMode::Off),
        "shared" => Ok(CompressionMode::Shared),
        "dedicated" => Err(
            "dedicated (a compressor per connection, with context takeover) is not supported yet; use off or shared"
                .into(),
        ),
        _ => Err("expected off or shared".into()),
    }
}

/// `--history`: 0 (no replay) to a million events per topic, a bound on what one busy
/// topic can pin in memory.
pub const HISTORY: CountRange = CountRange {
    flag: "--history",
    min: 0,
    max: 1_000_000,
};

/// `--history-memory`: 1 MiB (a few thousand small events) to 1 TiB.
pub const HISTORY_MEMORY: CountRange = CountRange {
    flag: "--history-memory",
    min: 1 << 20,
    max: 1 << 40,
};

/// `--history-ttl`: 1 s (topics are swept once a second) to 30 days.
pub const HISTORY_TTL: DurationRange = DurationRange {
    flag: "--history-ttl",
    min: Duration::from_secs(1),
    max: Duration::from_secs(30 * 24 * 3600),
};

/// Every server duration lies in 1 ms to 24 h: zero would spin or close at once, and
/// the timer wheel counts nanoseconds in a `u64`, so the bound keeps far from its
/// 584-year overflow while 24 h is already "practically never".
const fn server_duration(flag: &'static str) -> DurationRange {
    DurationRange {
        flag,
        min: Duration::from_millis(1),
        max: Duration::from_secs(24 * 3600),
    }
}

/// `--ping-interval`.
pub const PING_INTERVAL: DurationRange = server_duration("--ping-interval");
/// `--pong-timeout`.
pub const PONG_TIMEOUT: DurationRange = server_duration("--pong-timeout");
/// `--outbox-timeout`.
pub const OUTBOX_TIMEOUT: DurationRange = server_duration("--outbox-timeout");
/// `--sse-heartbeat`.
pub const SSE_HEARTBEAT: DurationRange = server_duration("--sse-heartbeat");
/// `--sse-retry`.
pub const SSE_RETRY: DurationRange = server_duration("--sse-retry");
/// `--handshake-timeout`.
pub const HANDSHAKE_TIMEOUT: DurationRange = server_duration("--handshake-timeout");
/// `--drain-timeout`.
pub const DRAIN_TIMEOUT: DurationRange = server_duration("--drain-timeout");

const LISTEN_EXPECTED: &str =
    "expected an IP address and port like 127.0.0.1:8080, 0.0.0.0:8080 or [::]:8080";
const TOKEN_EXPECTED: &str = "expected a non-empty token of visible ASCII characters (no spaces)";
const ORIGIN_EXPECTED: &str = "expected an origin like https://app.example.com or http://localhost:3000 (scheme://host[:port], no path)";

/// Parses `--listen`. Host names are refused rather than resolved: which of a name's
/// addresses got bound would depend on the resolver.
pub fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    text.parse().map_err(|_| LISTEN_EXPECTED.to_owned())
}

/// Parses an `--allowed-origin`: the serialised origin browsers send (RFC 6454 §6.1),
/// so `https://a.example/` (a path) is refused: no `Origin` header could ever match it.
/// `null` (sandboxed frames, `file:` pages) is accepted.
pub fn parse_origin(text: &str) -> Result<String, String> {
    let ok = text == "null"
        || text.split_once("://").is_some_and(|(scheme, host)| {
            scheme.starts_with(|c: char| c.is_ascii_alphabetic())
                && scheme
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
                && !host.is_empty()
                && host
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && !b"/?#@".contains(&b))
        });
    if ok {
        Ok(text.to_owned())
    } else {
        Err(ORIGIN_EXPECTED.to_owned())
    }
}

/// The token is compared with what follows `Bearer ` in a header, so it must be one
/// header token: visible ASCII, no spaces. Errors never echo it: it is a secret.
fn check_token(token: &str, flag: &'static str) -> Result<(), ConfigError> {
    if !token.is_empty() && token.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(())
    } else {
        Err(ConfigError {
            flag,
            message: TOKEN_EXPECTED.to_owned(),
        })
    }
}

/// Any non-empty text (a path, an issuer, an audience).
pub fn parse_nonempty(text: &str) -> Result<String, String> {
    if text.is_empty() {
        Err("expected a non-empty value".to_owned())
    } else {
        Ok(text.to_owned())
    }
}

/// Formats a duration the way [`parse_duration`] reads it, in the largest exact unit
/// (`90s`, `2m`, `1500ms`); below a millisecond is cut off.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    match ms {
        0 => "0s".to_owned(),
        _ if ms % 3_600_000 == 0 => format!("{}h", ms / 3_600_000),
        _ if ms % 60_000 == 0 => format!("{}m", ms / 60_000),
        _ if ms % 1000 == 0 => format!("{}s", ms / 1000),
        _ => format!("{ms}ms"),
    }
}

/// `--redis`: `redis://[USER:PASSWORD@]HOST[:PORT][/DB]` (the `redis` crate reads the
/// rest; this only refuses what is surely not one).
pub fn parse_redis_url(s: &str) -> Result<String, String> {
    let expected = "expected redis://[USER:PASSWORD@]HOST[:PORT][/DB]";
    let rest = s.strip_prefix("redis://").ok_or(expected)?;
    let host = rest.rsplit('@').next().unwrap_or("");
    if host.is_empty() || host.starts_with('/') || s.chars().any(char::is_whitespace) {
        return Err(expected.into());
    }
    Ok(s.to_string())
}

/// `--node-id`: 1 to 64 characters of `A-Z a-z 0-9 . _ - :`.
pub fn parse_node_id(s: &str) -> Result<String, String> {
    let ok = (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':'));
    if ok {
        Ok(s.to_string())
    } else {
        Err("expected 1 to 64 characters of A-Z a-z 0-9 . _ - :".into())
    }
}

/// Values given explicitly by one source (the TOML file or the command line); `None`
/// keeps what the source below said. Each value has passed its flag's parser.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    /// `--listen`.
    pub listen: Option<SocketAddr>,
    /// `--shards`.
    pub shards: Option<usize>,
    /// `--max-connections`.
    pub max_connections: Option<usize>,
    /// `--ping-interval`.
    pub ping_interval: Option<Duration>,
    /// `--pong-timeout`.
    pub pong_timeout: Option<Duration>,
    /// `--sse-heartbeat`.
    pub sse_heartbeat: Option<Duration>,
    /// `--sse-retry`.
    pub sse_retry: Option<Duration>,
    /// `--handshake-timeout`.
    pub handshake_timeout: Option<Duration>,
    /// `--max-message-bytes`.
    pub max_message_bytes: Option<usize>,
    /// `--max-outbox-bytes`.
    pub max_outbox_bytes: Option<usize>,
    /// `--outbox-timeout`.
    pub outbox_timeout: Option<Duration>,
    /// `--history`.
    pub history: Option<usize>,
    /// `--history-ttl`.
    pub history_ttl: Option<Duration>,
    /// `--history-memory`.
    pub history_memory: Option<usize>,
    /// `--publish-token`.
    pub publish_token: Option<String>,
    /// `--jwt-secret` (or `RINGPUSH_JWT_SECRET`).
    pub jwt_secret: Option<String>,
    /// `--jwt-public-key`.
    pub jwt_public_key: Option<PathBuf>,
    /// `--jwt-issuer`.
    pub jwt_issuer: Option<String>,
    /// `--tls-cert`.
    pub tls_cert: Option<PathBuf>,
    /// `--tls-key`.
    pub tls_key: Option<PathBuf>,
    /// `--jwt-audience`.
    pub jwt_audience: Option<String>,
    /// `--admin-listen`.
    pub admin_listen: Option<SocketAddr>,
    /// `--allowed-origin`, repeatable (an array in TOML). A list from a higher source
    /// replaces the lower one's rather than adding to it, so the command line can narrow
    /// what a file allows.
    pub allowed_origins: Option<Vec<String>>,
    /// `--drain-timeout`.
    pub drain_timeout: Option<Duration>,
    /// `--redis`.
    pub redis: Option<String>,
    /// `--node-id`.
    pub node_id: Option<String>,
    /// `--proxy-protocol` (a boolean in TOML).
    pub proxy_protocol: Option<bool>,
    /// `--trusted-proxy`, repeatable (an array in TOML); a higher source's list
    /// replaces a lower one's, as with `--allowed-origin`.
    pub trusted_proxies: Option<Vec<Cidr>>,
    /// `--access-log` (a boolean in TOML).
    pub access_log: Option<bool>,
    /// `--compression`.
    pub compression: Option<CompressionMode>,
    /// `--compression-min-bytes`.
    pub compression_min_bytes: Option<usize>,
}

/// The TOML file as written, before any value is interpreted: values stay raw so they go
/// through the flags' own parsers (same messages), and keep their position for the
/// error. Field names are the keys (`rename_all`), so serde's unknown-key error lists
/// exactly the accepted keys.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileKeys {
    listen: Option<Spanned<Value>>,
    shards: Option<Spanned<Value>>,
    max_connections: Option<Spanned<Value>>,
    ping_interval: Option<Spanned<Value>>,
    pong_timeout: Option<Spanned<Value>>,
    sse_heartbeat: Option<Spanned<Value>>,
    sse_retry: Option<Spanned<Value>>,
    handshake_timeout: Option<Spanned<Value>>,
    max_message_bytes: Option<Spanned<Value>>,
    max_outbox_bytes: Option<Spanned<Value>>,
    outbox_timeout: Option<Spanned<Value>>,
    history: Option<Spanned<Value>>,
    history_ttl: Option<Spanned<Value>>,
    history_memory: Option<Spanned<Value>>,
    publish_token: Option<Spanned<Value>>,
    jwt_secret: Option<Spanned<Value>>,
    jwt_public_key: Option<Spanned<Value>>,
    jwt_issuer: Option<Spanned<Value>>,
    tls_cert: Option<Spanned<Value>>,
    tls_key: Option<Spanned<Value>>,
    jwt_audience: Option<Spanned<Value>>,
    admin_listen: Option<Spanned<Value>>,
    allowed_origin: Option<Spanned<Value>>,
    drain_timeout: Option<Spanned<Value>>,
    redis: Option<Spanned<Value>>,
    node_id: Option<Spanned<Value>>,
    proxy_protocol: Option<Spanned<Value>>,
    trusted_proxy: Option<Spanned<Value>>,
    access_log: Option<Spanned<Value>>,
    compression: Option<Spanned<Value>>,
    compression_min_bytes: Option<Spanned<Value>>,
}

/// Turns TOML values into [`Overrides`], naming the file and line of a bad one.
struct FileReader<'a> {
    text: &'a str,
    file: Option<&'a Path>,
}

impl FileReader<'_> {
    /// ` (ringpush.toml line 3)`.
    fn place(&self, span: Option<Range<usize>>) -> String {
        let line = span.map(|s| {
            let start = s.start.min(self.text.len());
            1 + self.text.as_bytes()[..start]
                .iter()
                .filter(|&&b| b == b'\n')
                .count()
        });
        match (self.file, line) {
            (Some(f), Some(l)) => format!(" ({} line {l})", f.display()),
            (Some(f), None) => format!(" ({})", f.display()),
            (None, Some(l)) => format!(" (line {l})"),
            (None, None) => String::new(),
        }
    }

    /// A value read with its flag's parser. `ints`: a TOML integer is also accepted, as
    /// the digits it is written with (`shards = 4`, `ping-interval = 30`).
    fn value<T>(
        &self,
        raw: Option<Spanned<Value>>,
        flag: &'static str,
        ints: bool,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Option<T>, ConfigError> {
        let Some(raw) = raw else { return Ok(None) };
        let span = raw.span();
        let value = raw.into_inner();
        let result = match &value {
            Value::String(s) => parse(s),
            Value::Integer(i) if ints => parse(&i.to_string()),
            // A kind this flag never takes (a float, a table, ...). Every parser refuses
            // the empty string, which gives its message of what it accepts.
            _ => Err(parse("").err().unwrap_or_default()),
        };
        result.map(Some).map_err(|expected| ConfigError {
            flag,
            // `value` prints as TOML (`"abc"`, `1.5`): what the user wrote.
            message: format!("{expected}, got {value}{}", self.place(Some(span))),
        })
    }

    fn count(
        &self,
        raw: Option<Spanned<Value>>,
        range: CountRange,
    ) -> Result<Option<usize>, ConfigError> {
        self.value(raw, range.flag, true, |t| range.parse(t))
    }

    fn duration(
        &self,
        raw: Option<Spanned<Value>>,
        range: DurationRange,
    ) -> Result<Option<Duration>, ConfigError> {
        self.value(raw, range.flag, true, |t| range.parse(t))
    }

    /// A secret for `flag`. Never echoes the value.
    fn token(
        &self,
        raw: Option<Spanned<Value>>,
        flag: &'static str,
    ) -> Result<Option<String>, ConfigError> {
        let Some(raw) = raw else { return Ok(None) };
        let at = |e: ConfigError| ConfigError {
            message: e.message + &self.place(Some(raw.span())),
            ..e
        };
        match raw.get_ref() {
            Value::String(s) => check_token(s, flag).map(|()| Some(s.clone())).map_err(at),
            _ => Err(at(ConfigError {
                flag,
                message: TOKEN_EXPECTED.to_owned(),
            })),
        }
    }

    /// An array of origins, or one origin as a plain string.
    fn origins(&self, raw: Option<Spanned<Value>>) -> Result<Option<Vec<String>>, ConfigError> {
        let Some(raw) = raw else { return Ok(None) };
        let span = raw.span();
        let items = match raw.into_inner() {
            Value::Array(items) => items,
            one => vec![one],
        };
        let mut origins = Vec::with_capacity(items.len());
        for item in items {
            let item = Spanned::new(span.clone(), item);
            origins.extend(self.value(Some(item), "--allowed-origin", false, parse_origin)?);
        }
        Ok(Some(origins))
    }

    /// A switch: `true` or `false` (a TOML boolean).
    fn switch(
        &self,
        raw: Option<Spanned<Value>>,
        flag: &'static str,
    ) -> Result<Option<bool>, ConfigError> {
        let Some(raw) = raw else { return Ok(None) };
        match raw.get_ref() {
            Value::Boolean(b) => Ok(Some(*b)),
            other => Err(ConfigError {
                flag,
                message: format!(
                    "expected true or false, got {other}{}",
                    self.place(Some(raw.span()))
                ),
            }),
        }
    }

    /// An array of address ranges, or one as a plain string.
    fn cidrs(&self, raw: Option<Spanned<Value>>) -> Result<Option<Vec<Cidr>>, ConfigError> {
        let Some(raw) = raw else { return Ok(None) };
        let span = raw.span();
        let items = match raw.into_inner() {
            Value::Array(items) => items,
            one => vec![one],
        };
        let mut cidrs = Vec::with_capacity(items.len());
        for item in items {
            let item = Spanned::new(span.clone(), item);
            cidrs.extend(self.value(Some(item), "--trusted-proxy", false, Cidr::parse)?);
        }
        Ok(Some(cidrs))
    }

    fn read(&self) -> Result<Overrides, ConfigError> {
        let keys: FileKeys = toml::from_str(self.text).map_err(|e| ConfigError {
            flag: "--config",
            // toml's message is one line; the snippet its Display adds is not. serde
            // says "field" where TOML says "key".
            message: format!(
                "{}{}",
                e.message()
                    .lines()
                    .next()
                    .unwrap_or("invalid TOML")
                    .replace("unknown field", "unknown key"),
                self.place(e.span())
            ),
        })?;
        Ok(Overrides {
            listen: self.value(keys.listen, "--listen", false, parse_listen)?,
            shards: self.count(keys.shards, SHARDS)?,
            max_connections: self.count(keys.max_connections, MAX_CONNECTIONS)?,
            ping_interval: self.duration(keys.ping_interval, PING_INTERVAL)?,
            pong_timeout: self.duration(keys.pong_timeout, PONG_TIMEOUT)?,
            sse_heartbeat: self.duration(keys.sse_heartbeat, SSE_HEARTBEAT)?,
            sse_retry: self.duration(keys.sse_retry, SSE_RETRY)?,
            handshake_timeout: self.duration(keys.handshake_timeout, HANDSHAKE_TIMEOUT)?,
            max_message_bytes: self.count(keys.max_message_bytes, MAX_MESSAGE_BYTES)?,
            max_outbox_bytes: self.count(keys.max_outbox_bytes, MAX_OUTBOX_BYTES)?,
            outbox_timeout: self.duration(keys.outbox_timeout, OUTBOX_TIMEOUT)?,
            history: self.count(keys.history, HISTORY)?,
            history_ttl: self.duration(keys.history_ttl, HISTORY_TTL)?,
            history_memory: self.count(keys.history_memory, HISTORY_MEMORY)?,
            publish_token: self.token(keys.publish_token, "--publish-token")?,
            jwt_secret: self.token(keys.jwt_secret, "--jwt-secret")?,
            jwt_public_key: self.value(keys.jwt_public_key, "--jwt-public-key", false, |t| {
                parse_nonempty(t).map(PathBuf::from)
            })?,
            jwt_issuer: self.value(keys.jwt_issuer, "--jwt-issuer", false, parse_nonempty)?,
            tls_cert: self.value(keys.tls_cert, "--tls-cert", false, |t| {
                parse_nonempty(t).map(PathBuf::from)
            })?,
            tls_key: self.value(keys.tls_key, "--tls-key", false, |t| {
                parse_nonempty(t).map(PathBuf::from)
            })?,
            jwt_audience: self.value(keys.jwt_audience, "--jwt-audience", false, parse_nonempty)?,
            admin_listen: self.value(keys.admin_listen, "--admin-listen", false, parse_listen)?,
            allowed_origins: self.origins(keys.allowed_origin)?,
            drain_timeout: self.duration(keys.drain_timeout, DRAIN_TIMEOUT)?,
            redis: self.value(keys.redis, "--redis", false, parse_redis_url)?,
            node_id: self.value(keys.node_id, "--node-id", false, parse_node_id)?,
            proxy_protocol: self.switch(keys.proxy_protocol, "--proxy-protocol")?,
            trusted_proxies: self.cidrs(keys.trusted_proxy)?,
            access_log: self.switch(keys.access_log, "--access-log")?,
            compression: self.value(keys.compression, "--compression", false, parse_compression)?,
            compression_min_bytes: self.count(keys.compression_min_bytes, COMPRESSION_MIN_BYTES)?,
        })
    }
}

impl Overrides {
    /// Reads TOML text whose keys are the flag names (`ping-interval = "20s"`). Unknown
    /// keys are an error naming the key, so a typo is not silently a default.
    pub fn from_toml(text: &str) -> Result<Overrides, ConfigError> {
        FileReader { text, file: None }.read()
    }

    /// Reads a TOML file, as [`Overrides::from_toml`]; errors name the file and line.
    pub fn from_toml_file(path: &Path) -> Result<Overrides, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            flag: "--config",
            message: format!("cannot read {}: {e}", path.display()),
        })?;
        FileReader {
            text: &text,
            file: Some(path),
        }
        .read()
    }

    /// Sets every value that is present onto `c`.
    pub fn apply(&self, c: &mut Config) {
        macro_rules! set {
            ($($field:ident),*) => { $( if let Some(v) = &self.$field { c.$field = v.clone(); } )* };
        }
        set!(
            listen,
            shards,
            ping_interval,
            pong_timeout,
            sse_heartbeat,
            sse_retry,
            handshake_timeout,
            max_message_bytes,
            max_outbox_bytes,
            outbox_timeout,
            history,
            history_memory,
            allowed_origins,
            drain_timeout,
            proxy_protocol,
            trusted_proxies,
            access_log,
            compression,
            compression_min_bytes
        );
        if self.max_connections.is_some() {
            c.max_connections = self.max_connections;
        }
        if self.history_ttl.is_some() {
            c.history_ttl = self.history_ttl;
        }
        if self.publish_token.is_some() {
            c.publish_token.clone_from(&self.publish_token);
        }
        if self.jwt_secret.is_some() {
            c.jwt_secret.clone_from(&self.jwt_secret);
        }
        if self.jwt_public_key.is_some() {
            c.jwt_public_key.clone_from(&self.jwt_public_key);
        }
        if self.jwt_issuer.is_some() {
            c.jwt_issuer.clone_from(&self.jwt_issuer);
        }
        if self.tls_cert.is_some() {
            c.tls_cert.clone_from(&self.tls_cert);
        }
        if self.tls_key.is_some() {
            c.tls_key.clone_from(&self.tls_key);
        }
        if self.jwt_audience.is_some() {
            c.jwt_audience.clone_from(&self.jwt_audience);
        }
        if self.admin_listen.is_some() {
            c.admin_listen = self.admin_listen;
        }
        if self.redis.is_some() {
            c.redis.clone_from(&self.redis);
        }
        if self.node_id.is_some() {
            c.node_id.clone_from(&self.node_id);
        }
    }
}

impl Config {
    /// The defaults, then the TOML `file` if any, then `flags`; then [`Config::validate`].
    pub fn from_sources(file: Option<&Path>, flags: &Overrides) -> Result<Config, ConfigError> {
        let mut c = Config::default();
        if let Some(path) = file {
            Overrides::from_toml_file(path)?.apply(&mut c);
        }
        flags.apply(&mut c);
        c.validate()?;
        Ok(c)
    }

    /// Checks every value against its flag's accepted values (the same ranges the
    /// parsers use); the first bad one is the error.
    pub fn validate(&self) -> Result<(), ConfigError> {
        SHARDS.check(self.shards)?;
        if let Some(m) = self.max_connections {
            MAX_CONNECTIONS.check(m)?;
        }
        PING_INTERVAL.check(self.ping_interval)?;
        PONG_TIMEOUT.check(self.pong_timeout)?;
        SSE_HEARTBEAT.check(self.sse_heartbeat)?;
        SSE_RETRY.check(self.sse_retry)?;
        HANDSHAKE_TIMEOUT.check(self.handshake_timeout)?;
        MAX_MESSAGE_BYTES.check(self.max_message_bytes)?;
        MAX_OUTBOX_BYTES.check(self.max_outbox_bytes)?;
        OUTBOX_TIMEOUT.check(self.outbox_timeout)?;
        HISTORY.check(self.history)?;
        HISTORY_MEMORY.check(self.history_memory)?;
        if let Some(ttl) = self.history_ttl {
            HISTORY_TTL.check(ttl)?;
        }
        if let Some(t) = &self.publish_token {
            check_token(t, "--publish-token")?;
        }
        if let Some(t) = &self.jwt_secret {
            check_token(t, "--jwt-secret")?;
        }
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) => {
                return Err(ConfigError {
                    flag: "--tls-cert",
                    message: "needs --tls-key (the certificate's private key)".into(),
                });
            }
            (None, Some(_)) => {
                return Err(ConfigError {
                    flag: "--tls-key",
                    message: "needs --tls-cert (the certificate chain it belongs to)".into(),
                });
            }
            _ => {}
        }
        if self.admin_listen.is_some_and(|a| a == self.listen) {
            return Err(ConfigError {
                flag: "--admin-listen",
                message: format!("must differ from --listen, got {}", self.listen),
            });
        }
        for o in &self.allowed_origins {
            parse_origin(o).map_err(|expected| ConfigError {
                flag: "--allowed-origin",
                message: format!("{expected}, got {o:?}"),
            })?;
        }
        DRAIN_TIMEOUT.check(self.drain_timeout)?;
        COMPRESSION_MIN_BYTES.check(self.compression_min_bytes)?;
        if let Some(url) = &self.redis {
            parse_redis_url(url).map_err(|expected| ConfigError {
                flag: "--redis",
                message: format!("{expected}, got {url:?}"),
            })?;
        }
        if let Some(id) = &self.node_id {
            parse_node_id(id).map_err(|expected| ConfigError {
                flag: "--node-id",
                message: format!("{expected}, got {id:?}"),
            })?;
        }
        Ok(())
    }

    /// Valid but probably unintended combinations, one line each (`--check-config`
    /// prints them). Not errors: a test may want a tiny outbox on purpose.
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        let full_frame = self.max_message_bytes.saturating_add(MAX_FRAME_HEADER);
        if self.max_outbox_bytes < full_frame {
            w.push(format!(
                "--max-outbox-bytes {} is below --max-message-bytes + {MAX_FRAME_HEADER} ({full_frame}): \
                 every subscriber of a full-size message is closed as a slow consumer",
                self.max_outbox_bytes
            ));
        }
        if !self.trusted_proxies.is_empty() && !self.access_log {
            w.push(
                "--trusted-proxy without --access-log: the client's address is used by nothing else yet"
                    .to_owned(),
            );
        }
        if self.pong_timeout >= self.ping_interval {
            w.push(format!(
                "--pong-timeout {} is not below --ping-interval {}: a dead peer is found only after both",
                format_duration(self.pong_timeout),
                format_duration(self.ping_interval)
            ));
        }
        w
    }

    /// The configuration as a TOML file that [`Overrides::from_toml`] reads back to the
    /// same values (for `--check-config`, and a starting point for a config file). The
    /// publish token is only a comment saying whether one is set: this output may end up
    /// in logs.
    pub fn to_toml(&self) -> String {
        let d = format_duration;
        let mut s = String::new();
        // Writing to a String cannot fail.
        let _ = writeln!(s, "listen = \"{}\"", self.listen);
        let _ = writeln!(s, "shards = {}", self.shards);
        match self.max_connections {
            Some(m) => _ = writeln!(s, "max-connections = {m}"),
            None => s.push_str("# max-connections: sized from limits at startup\n"),
        }
        let _ = writeln!(s, "ping-interval = \"{}\"", d(self.ping_interval));
        let _ = writeln!(s, "pong-timeout = \"{}\"", d(self.pong_timeout));
        let _ = writeln!(s, "sse-heartbeat = \"{}\"", d(self.sse_heartbeat));
        let _ = writeln!(s, "sse-retry = \"{}\"", d(self.sse_retry));
        let _ = writeln!(s, "handshake-timeout = \"{}\"", d(self.handshake_timeout));
        let _ = writeln!(s, "max-message-bytes = {}", self.max_message_bytes);
        let _ = writeln!(s, "max-outbox-bytes = {}", self.max_outbox_bytes);
        let _ = writeln!(s, "outbox-timeout = \"{}\"", d(self.outbox_timeout));
        let _ = writeln!(s, "history = {}", self.history);
        let _ = writeln!(s, "history-memory = {}", self.history_memory);
        match self.history_ttl {
            Some(ttl) => _ = writeln!(s, "history-ttl = \"{}\"", d(ttl)),
            None => s.push_str("# history-ttl: none (topics kept for the server's life)\n"),
        }
        s.push_str(match self.publish_token {
            Some(_) => "# publish-token: set (not shown)\n",
            None => "# publish-token: none (anyone may publish)\n",
        });
        s.push_str(match self.jwt_secret {
            Some(_) => "# jwt-secret: set (not shown)\n",
            None => "# jwt-secret: none\n",
        });
        let opt = |s: &mut String, key: &str, v: Option<String>| match v {
            Some(v) => _ = writeln!(s, "{key} = {}", Value::String(v)),
            None => _ = writeln!(s, "# {key}: none"),
        };
        opt(
            &mut s,
            "jwt-public-key",
            self.jwt_public_key
                .as_ref()
                .map(|p| p.display().to_string()),
        );
        opt(&mut s, "jwt-issuer", self.jwt_issuer.clone());
        let path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
        opt(&mut s, "tls-cert", path(&self.tls_cert));
        opt(&mut s, "tls-key", path(&self.tls_key));
        opt(&mut s, "jwt-audience", self.jwt_audience.clone());
        opt(
            &mut s,
            "admin-listen",
            self.admin_listen.map(|a| a.to_string()),
        );
        let origins = self
            .allowed_origins
            .iter()
            .map(|o| Value::String(o.clone()))
            .collect();
        let _ = writeln!(s, "allowed-origin = {}", Value::Array(origins));
        let _ = writeln!(s, "drain-timeout = \"{}\"", d(self.drain_timeout));
        opt(&mut s, "redis", self.redis.clone());
        opt(&mut s, "node-id", self.node_id.clone());
        let _ = writeln!(s, "proxy-protocol = {}", self.proxy_protocol);
        let proxies = self
            .trusted_proxies
            .iter()
            .map(|c| Value::String(c.to_string()))
            .collect();
        let _ = writeln!(s, "trusted-proxy = {}", Value::Array(proxies));
        let _ = writeln!(s, "access-log = {}", self.access_log);
        let mode = match self.compression {
            CompressionMode::Off => "off",
            CompressionMode::Shared => "shared",
        };
        let _ = writeln!(s, "compression = \"{mode}\"");
        let _ = writeln!(s, "compression-min-bytes = {}", self.compression_min_bytes);
        s
    }

    /// The protocol core's view of this configuration.
    pub fn conn_config(&self) -> ConnConfig {
        ConnConfig {
            limits: Limits {
                max_message_bytes: self.max_message_bytes,
                ..Limits::default()
            },
            handshake_timeout: self.handshake_timeout,
            ping_interval: self.ping_interval,
            pong_timeout: self.pong_timeout,
            sse_heartbeat: self.sse_heartbeat,
            sse_retry: self.sse_retry,
            allowed_origins: self.allowed_origins.clone(),
            publish_token: self.publish_token.clone(),
            proxy_protocol: self.proxy_protocol,
            trusted_proxies: self.trusted_proxies.clone(),
            compression: self.compression,
            compression_min_bytes: self.compression_min_bytes,
            ..ConnConfig::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn file_error(text: &str) -> ConfigError {
        Overrides::from_toml(text).unwrap_err()
    }

    #[test]
    fn proxy_keys() {
        let o = Overrides::from_toml(
            "proxy-protocol = true\ntrusted-proxy = [\"10.0.0.0/8\", \"::1\"]\naccess-log = false\n",
        )
        .unwrap();
        assert_eq!(o.proxy_protocol, Some(true));
        assert_eq!(o.access_log, Some(false));
        assert_eq!(
            o.trusted_proxies,
            Some(vec![
                Cidr::parse("10.0.0.0/8").unwrap(),
                Cidr::parse("::1/128").unwrap()
            ])
        );
        let one = Overrides::from_toml("trusted-proxy = \"192.0.2.1\"").unwrap();
        assert_eq!(one.trusted_proxies.map(|v| v.len()), Some(1));
        let e = file_error("proxy-protocol = \"yes\"");
        assert_eq!(e.flag, "--proxy-protocol");
        assert_eq!(e.message, "expected true or false, got \"yes\" (line 1)");
        let e = file_error("\ntrusted-proxy = [\"10.1.0.0/8\"]");
        assert_eq!(e.flag, "--trusted-proxy");
        assert!(
            e.message.contains("host bits set under /8"),
            "{}",
            e.message
        );
        assert!(e.message.ends_with("(line 2)"), "{}", e.message);
        let mut c = Config {
            trusted_proxies: vec![Cidr::parse("10.0.0.0/8").unwrap()],
            ..Config::default()
        };
        assert_eq!(c.validate(), Ok(()));
        assert!(
            c.warnings()[0].contains("--access-log"),
            "{:?}",
            c.warnings()
        );
        c.access_log = true;
        assert!(c.warnings().is_empty(), "{:?}", c.warnings());
    }

    #[test]
    fn defaults_are_valid() {
        let c = Config::default();
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert!((1..=MAX_SHARDS).contains(&c.shards));
        assert_eq!(c.max_connections, None);
        assert_eq!(c.ping_interval, Duration::from_secs(30));
        assert_eq!(c.max_outbox_bytes, 4 << 20);
        assert_eq!(c.history, 1024);
        assert_eq!(c.conn_config().limits.max_message_bytes, 1 << 20);
        assert!(c.warnings().is_empty(), "{:?}", c.warnings());
    }

    #[test]
    fn cpus_come_from_the_affinity_mask() {
        let n = available_cpus();
        assert!((1..=MAX_SHARDS).contains(&n));
        if let Some(mask) = affinity_cpus() {
            assert_eq!(n, mask.min(MAX_SHARDS));
        }
    }

    #[test]
    fn file_then_flags() {
        let file = Overrides::from_toml(
            "listen = \"0.0.0.0:9000\"\nping-interval = \"20s\"\nallowed-origin = [\"https://a.example\"]\nhistory = 5\nshards = \"3\"\npong-timeout = 4\n",
        )
        .unwrap();
        let mut c = Config::default();
        file.apply(&mut c);
        Overrides {
            listen: Some("127.0.0.2:1".parse().unwrap()),
            history: Some(0),
            ..Overrides::default()
        }
        .apply(&mut c);
        assert_eq!(c.listen.to_string(), "127.0.0.2:1", "flag beats file");
        assert_eq!(c.history, 0, "flag beats file");
        assert_eq!(
            c.ping_interval,
            Duration::from_secs(20),
            "file beats default"
        );
        assert_eq!(
            c.pong_timeout,
            Duration::from_secs(4),
            "integers are seconds"
        );
        assert_eq!(c.shards, 3, "digits in a string are accepted");
        assert_eq!(c.allowed_origins, ["https://a.example"]);
        assert_eq!(c.sse_retry, Duration::from_secs(3), "default kept");
        let one = Overrides::from_toml("allowed-origin = \"https://b.example\"").unwrap();
        assert_eq!(
            one.allowed_origins,
            Some(vec!["https://b.example".to_owned()])
        );
        assert_eq!(Overrides::from_toml("").unwrap(), Overrides::default());
    }

    #[test]
    fn file_errors_name_the_key_and_line() {
        let e = file_error("listen = \"127.0.0.1:1\"\npingg-interval = \"1s\"");
        assert_eq!(e.flag, "--config");
        assert!(e.message.contains("pingg-interval"), "{e}");
        assert!(e.message.contains("ping-interval"), "lists the keys: {e}");
        assert!(e.message.ends_with("(line 2)"), "{e}");

        let e = file_error("\nping-interval = \"soon\"");
        assert_eq!(
            e.to_string(),
            "--ping-interval: expected a duration from 1ms to 24h, like 500ms, 30s or 2m, got \"soon\" (line 2)"
        );
        let e = file_error("shards = 0");
        assert_eq!(
            e.to_string(),
            "--shards: expected a whole number from 1 to 1024, got 0 (line 1)"
        );
        let e = file_error("history = -1");
        assert_eq!(e.flag, "--history");
        let e = file_error("max-message-bytes = 1.5");
        assert!(e.message.contains("got 1.5"), "{e}");
        let e = file_error("listen = 8080");
        assert!(e.message.contains("127.0.0.1:8080"), "{e}");
        let e = file_error("allowed-origin = [\"https://ok.example\", \"https://a.example/\"]");
        assert!(e.message.contains("\"https://a.example/\""), "{e}");
        let e = file_error("publish-token = \"se cret\"");
        assert_eq!(e.flag, "--publish-token");
        assert!(!e.message.contains("se cret"), "never echo a secret: {e}");
        let e = file_error("publish-token = [\"x\"]");
        assert_eq!(e.flag, "--publish-token");
        let e = file_error("[server]\nlisten = \"127.0.0.1:1\"");
        assert!(e.message.contains("server"), "{e}");
        let e = file_error("listen = ");
        assert_eq!(e.flag, "--config");
        for text in [
            "a = 1",
            "listen = 1\nlisten = 2",
            "shards = \"x\"",
            "ping-interval = true",
        ] {
            let e = file_error(text);
            assert!(!e.to_string().contains('\n'), "one line: {e}");
        }
    }

    #[test]
    fn file_and_flag_messages_agree() {
        // What clap prints after "invalid value 'x' for '--flag <N>': " is the parser's
        // message; the file's message starts with the same words.
        let flag = SHARDS.parse("x").unwrap_err();
        let file = file_error("shards = \"x\"");
        assert!(file.message.starts_with(&flag), "{flag} / {file}");
        let flag = DRAIN_TIMEOUT.parse("0s").unwrap_err();
        let file = file_error("drain-timeout = \"0s\"");
        assert!(file.message.starts_with(&flag), "{flag} / {file}");
    }

    #[test]
    fn parsers() {
        assert_eq!(SHARDS.parse("4"), Ok(4));
        for bad in [
            "",
            "0",
            "1025",
            "+4",
            "-1",
            " 4",
            "4.0",
            "1_000",
            "99999999999999999999999",
        ] {
            assert_eq!(SHARDS.parse(bad), Err(SHARDS.expected()), "{bad:?}");
        }
        assert_eq!(HISTORY.parse("0"), Ok(0));
        assert_eq!(
            MAX_CONNECTIONS.expected(),
            "expected a whole number of at least 1"
        );
        assert_eq!(PING_INTERVAL.parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(PING_INTERVAL.parse("24h"), Ok(Duration::from_secs(86400)));
        for bad in ["", "0", "0ms", "25h", "abc", "1.5s", "-1s", "1 s"] {
            assert!(PING_INTERVAL.parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            parse_listen("[::1]:80"),
            Ok(SocketAddr::from(([0, 0, 0, 0, 0, 0, 0, 1], 80)))
        );
        for bad in ["nope", "8080", "localhost:8080", "127.0.0.1", ""] {
            assert!(parse_listen(bad).is_err(), "{bad:?}");
        }
        for good in [
            "https://app.example.com",
            "http://localhost:3000",
            "null",
            "chrome-extension://abc",
        ] {
            assert_eq!(parse_origin(good).as_deref(), Ok(good));
        }
        for bad in [
            "",
            "*",
            "app.example.com",
            "https://",
            "https://a.example/",
            "https://a.example/x",
            "https://a b",
            "1http://a",
        ] {
            assert!(parse_origin(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn validation_names_the_flag() {
        let bad = |f: fn(&mut Config), flag: &str| {
            let mut c = Config::default();
            f(&mut c);
            let e = c.validate().unwrap_err();
            assert_eq!(e.flag, flag);
            assert!(e.message.starts_with("expected"), "{e}");
        };
        bad(|c| c.shards = 0, "--shards");
        bad(|c| c.shards = 1025, "--shards");
        bad(|c| c.max_connections = Some(0), "--max-connections");
        bad(|c| c.ping_interval = Duration::ZERO, "--ping-interval");
        bad(|c| c.pong_timeout = Duration::ZERO, "--pong-timeout");
        bad(|c| c.sse_heartbeat = Duration::ZERO, "--sse-heartbeat");
        bad(|c| c.sse_retry = Duration::from_secs(90_000), "--sse-retry");
        bad(
            |c| c.handshake_timeout = Duration::ZERO,
            "--handshake-timeout",
        );
        bad(|c| c.drain_timeout = Duration::ZERO, "--drain-timeout");
        bad(|c| c.max_message_bytes = 0, "--max-message-bytes");
        bad(
            |c| c.max_message_bytes = (1 << 30) + 1,
            "--max-message-bytes",
        );
        bad(|c| c.max_outbox_bytes = 1023, "--max-outbox-bytes");
        bad(|c| c.history = 1_000_001, "--history");
        bad(|c| c.publish_token = Some(String::new()), "--publish-token");
        bad(|c| c.publish_token = Some("a b".into()), "--publish-token");
        bad(|c| c.publish_token = Some("é".into()), "--publish-token");
        bad(
            |c| c.allowed_origins = vec![String::new()],
            "--allowed-origin",
        );
        let c = Config {
            history: 0,
            max_outbox_bytes: 1024,
            max_message_bytes: 1,
            publish_token: Some("s3cr3t".into()),
            ..Config::default()
        };
        assert_eq!(c.validate(), Ok(()));
    }

    #[test]
    fn warnings() {
        let c = Config {
            max_outbox_bytes: 1 << 20,
            pong_timeout: Duration::from_secs(30),
            ..Config::default()
        };
        let w = c.warnings();
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].contains("--max-outbox-bytes") && w[1].contains("--pong-timeout"));
    }

    #[test]
    fn durations_format_as_they_parse() {
        for (d, s) in [
            (Duration::ZERO, "0s"),
            (Duration::from_millis(1500), "1500ms"),
            (Duration::from_secs(90), "90s"),
            (Duration::from_secs(120), "2m"),
            (Duration::from_secs(7200), "2h"),
        ] {
            assert_eq!(format_duration(d), s);
            assert_eq!(parse_duration(s), Some(d));
        }
    }

    fn duration_ms() -> impl Strategy<Value = Duration> {
        (1u64..=86_400_000).prop_map(Duration::from_millis)
    }

    proptest! {
        #[test]
        fn to_toml_reads_back(
            shards in 1..=MAX_SHARDS,
            max_connections in proptest::option::of(1usize..10_000_000),
            ping in duration_ms(),
            retry in duration_ms(),
            history in 0usize..=1_000_000,
            origins in proptest::collection::vec("https://[a-z]{1,8}\\.example(:[0-9]{1,5})?", 0..3),
            port: u16,
            proxy_protocol: bool,
            access_log: bool,
            proxies in proptest::collection::vec(
                prop_oneof![Just("10.0.0.0/8"), Just("192.0.2.7"), Just("fd00::/8"), Just("::1")],
                0..3,
            ),
        ) {
            let c = Config {
                listen: SocketAddr::from(([0, 0, 0, 0, 0, 0, 0, 1], port)),
                shards,
                max_connections,
                ping_interval: ping,
                sse_retry: retry,
                history,
                allowed_origins: origins,
                proxy_protocol,
                access_log,
                trusted_proxies: proxies.iter().map(|p| Cidr::parse(p).unwrap()).collect(),
                ..Config::default()
            };
            prop_assert_eq!(c.validate(), Ok(()));
            let mut back = Config { shards: 1, ..Config::default() };
            Overrides::from_toml(&c.to_toml()).unwrap().apply(&mut back);
            prop_assert_eq!(back, c);
        }
    }
}
