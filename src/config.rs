//! The server's configuration: one [`Config`] struct, filled from its defaults, then a
//! TOML file (`--config`), then command-line flags, and validated in one place so both
//! sources give the same one-line errors.

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::proto::conn::ConnConfig;
use crate::proto::http::parse_duration;
use crate::proto::limits::{DEFAULT_MAX_MESSAGE_BYTES, Limits};

/// Everything `ringpush serve` can be told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Address to bind. Default `127.0.0.1:8080`: loopback, so a first run exposes nothing.
    pub listen: SocketAddr,
    /// Shards (threads, each with its own ring and listener, pinned to one CPU). Default:
    /// the CPUs in the process's affinity mask, so `taskset` and cgroup cpusets are
    /// respected. More shards than CPUs only adds context switches.
    pub shards: usize,
    /// Connection cap; beyond it new connections get 503 + Retry-After. `None`: sized at
    /// startup from memory and the fixed-file tables the kernel allows.
    pub max_connections: Option<usize>,
    /// A WebSocket silent this long gets a ping. Default 30 s: below the 60 s idle
    /// timeout of common proxies and load balancers, and at a million connections it
    /// costs ~33,000 pings/s, a small fraction of one core.
    pub ping_interval: Duration,
    /// No byte at all this long after a ping closes the connection. Default 10 s: a dead
    /// peer is found within 40 s, yet a slow mobile link has time to answer.
    pub pong_timeout: Duration,
    /// SSE comment heartbeat period. Default 15 s: under the 30-60 s idle timeouts of
    /// proxies that would otherwise cut a quiet stream.
    pub sse_heartbeat: Duration,
    /// Base of the SSE `retry:` hint (each client gets the base ± 50%). Default 3 s, the
    /// browsers' own default, spread so that a restart is not a thundering herd.
    pub sse_retry: Duration,
    /// A request head (or publish body) not complete by then: the connection is closed.
    /// Default 10 s: generous for real clients, short enough that slowloris-style
    /// clients cannot pile up.
    pub handshake_timeout: Duration,
    /// Largest WebSocket message (close 1009 beyond) and publish body (413). Default
    /// 1 MiB. Memory risk: each connection may buffer this much while a message arrives.
    pub max_message_bytes: usize,
    /// Per-connection queued bytes before the slow-consumer policy acts. Default 4 MiB:
    /// four full-size messages of slack; lower it for many slow clients.
    pub max_outbox_bytes: usize,
    /// Events kept per topic for replay. Default 1024; memory is `topics * history *
    /// average event size`. 0 disables replay.
    pub history: usize,
    /// If set, `POST /publish` requires `Authorization: Bearer <token>`.
    pub publish_token: Option<String>,
    /// Origins allowed for WebSocket and SSE requests; empty = any.
    pub allowed_origins: Vec<String>,
    /// Graceful shutdown budget. Default 10 s, what orchestrators usually give before
    /// SIGKILL (Kubernetes: 30 s grace period).
    pub drain_timeout: Duration,
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
            history: 1024,
            publish_token: None,
            allowed_origins: Vec::new(),
            drain_timeout: Duration::from_secs(10),
        }
    }
}

/// CPUs in this process's affinity mask (what `taskset` or a cpuset allows).
pub fn available_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// A configuration error, naming the flag (or TOML key) it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The flag, e.g. `--ping-interval`.
    pub flag: String,
    /// What is wrong and what is accepted.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.flag, self.message)
    }
}

impl std::error::Error for ConfigError {}

fn err(flag: &str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        flag: flag.to_owned(),
        message: message.into(),
    }
}

/// Values given explicitly, by the TOML file or the command line; `None` keeps what the
/// lower layer said. TOML keys are the flag names without `--`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Overrides {
    /// `--listen`.
    pub listen: Option<SocketAddr>,
    /// `--shards`.
    pub shards: Option<usize>,
    /// `--max-connections`.
    pub max_connections: Option<usize>,
    /// `--ping-interval`.
    #[serde(default, deserialize_with = "de_duration")]
    pub ping_interval: Option<Duration>,
    /// `--pong-timeout`.
    #[serde(default, deserialize_with = "de_duration")]
    pub pong_timeout: Option<Duration>,
    /// `--sse-heartbeat`.
    #[serde(default, deserialize_with = "de_duration")]
    pub sse_heartbeat: Option<Duration>,
    /// `--sse-retry`.
    #[serde(default, deserialize_with = "de_duration")]
    pub sse_retry: Option<Duration>,
    /// `--handshake-timeout`.
    #[serde(default, deserialize_with = "de_duration")]
    pub handshake_timeout: Option<Duration>,
    /// `--max-message-bytes`.
    pub max_message_bytes: Option<usize>,
    /// `--max-outbox-bytes`.
    pub max_outbox_bytes: Option<usize>,
    /// `--history`.
    pub history: Option<usize>,
    /// `--publish-token`.
    pub publish_token: Option<String>,
    /// `--allowed-origin` (repeatable; a list in TOML).
    #[serde(rename = "allowed-origin")]
    pub allowed_origins: Option<Vec<String>>,
    /// `--drain-timeout`.
    #[serde(default, deserialize_with = "de_duration")]
    pub drain_timeout: Option<Duration>,
}

/// The one-line description of the duration syntax, used in every duration error.
pub const DURATION_SYNTAX: &str = "expected a duration like 500ms, 30s or 2m";

/// Parses a duration flag value (for clap's `value_parser`).
pub fn parse_duration_arg(s: &str) -> Result<Duration, String> {
    parse_duration(s).ok_or_else(|| DURATION_SYNTAX.to_owned())
}

fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let s = String::deserialize(d)?;
    parse_duration(&s)
        .map(Some)
        .ok_or_else(|| serde::de::Error::custom(format!("{DURATION_SYNTAX}, got {s:?}")))
}

impl Overrides {
    /// Applies every value that is set onto `c`.
    fn apply(self, c: &mut Config) {
        macro_rules! set {
            ($($field:ident),*) => { $( if let Some(v) = self.$field { c.$field = v; } )* };
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
            history,
            allowed_origins,
            drain_timeout
        );
        if self.max_connections.is_some() {
            c.max_connections = self.max_connections;
        }
        if self.publish_token.is_some() {
            c.publish_token = self.publish_token;
        }
    }

    /// Reads a TOML file whose keys are the flag names (`ping-interval = "20s"`).
    pub fn from_toml_file(path: &Path) -> Result<Overrides, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| err("--config", format!("cannot read {}: {e}", path.display())))?;
        Overrides::from_toml(&text)
            .map_err(|e| err("--config", format!("{}: {}", path.display(), e.message)))
    }

    /// Parses TOML text.
    pub fn from_toml(text: &str) -> Result<Overrides, ConfigError> {
        toml::from_str(text).map_err(|e: toml::de::Error| {
            // toml's messages are one line; the snippet that follows them is not.
            let line = e
                .message()
                .lines()
                .next()
                .unwrap_or("invalid TOML")
                .to_owned();
            err("--config", line)
        })
    }
}

impl Config {
    /// Defaults, then the TOML file, then `cli`; then validation.
    pub fn from_sources(file: Option<&Path>, cli: Overrides) -> Result<Config, ConfigError> {
        let mut c = Config::default();
        if let Some(path) = file {
            Overrides::from_toml_file(path)?.apply(&mut c);
        }
        cli.apply(&mut c);
        c.validate()?;
        Ok(c)
    }

    /// Checks every value's range; the error names the flag.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=1024).contains(&self.shards) {
            return Err(err(
                "--shards",
                format!("expected 1 to 1024, got {}", self.shards),
            ));
        }
        if self.max_connections == Some(0) {
            return Err(err("--max-connections", "expected at least 1"));
        }
        let durations = [
            ("--ping-interval", self.ping_interval),
            ("--pong-timeout", self.pong_timeout),
            ("--sse-heartbeat", self.sse_heartbeat),
            ("--sse-retry", self.sse_retry),
            ("--handshake-timeout", self.handshake_timeout),
            ("--drain-timeout", self.drain_timeout),
        ];
        for (flag, d) in durations {
            if d.is_zero() {
                return Err(err(flag, format!("{DURATION_SYNTAX}, greater than zero")));
            }
        }
        if !(1..=1 << 30).contains(&self.max_message_bytes) {
            return Err(err(
                "--max-message-bytes",
                format!("expected 1 to 1073741824, got {}", self.max_message_bytes),
            ));
        }
        if self.max_outbox_bytes < 1024 {
            return Err(err(
                "--max-outbox-bytes",
                format!("expected at least 1024, got {}", self.max_outbox_bytes),
            ));
        }
        if self.history > 1_000_000 {
            return Err(err(
                "--history",
                format!("expected 0 to 1000000, got {}", self.history),
            ));
        }
        if let Some(t) = &self.publish_token {
            if t.is_empty() || !t.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(err(
                    "--publish-token",
                    "expected a non-empty token of visible ASCII characters",
                ));
            }
        }
        if self
            .allowed_origins
            .iter()
            .any(|o| o.is_empty() || o.contains(char::is_whitespace))
        {
            return Err(err(
                "--allowed-origin",
                "expected an origin like https://app.example.com",
            ));
        }
        Ok(())
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
            ..ConnConfig::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let c = Config::default();
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert!(c.shards >= 1);
        assert_eq!(c.conn_config().limits.max_message_bytes, 1 << 20);
    }

    #[test]
    fn toml_layers_under_cli() {
        let file = Overrides::from_toml("listen = \"0.0.0.0:9000\"\nping-interval = \"20s\"\nallowed-origin = [\"https://a.example\"]\nhistory = 5\n").unwrap();
        let mut c = Config::default();
        file.apply(&mut c);
        Overrides {
            listen: Some("127.0.0.2:1".parse().unwrap()),
            ..Overrides::default()
        }
        .apply(&mut c);
        assert_eq!(c.listen.to_string(), "127.0.0.2:1");
        assert_eq!(c.ping_interval, Duration::from_secs(20));
        assert_eq!(c.history, 5);
        assert_eq!(c.allowed_origins, ["https://a.example"]);
    }

    #[test]
    fn toml_errors_are_one_line_and_name_the_key() {
        let e = Overrides::from_toml("pingg-interval = \"1s\"").unwrap_err();
        assert!(
            e.message.contains("pingg-interval") && !e.to_string().contains('\n'),
            "{e}"
        );
        let e = Overrides::from_toml("ping-interval = \"soon\"").unwrap_err();
        assert!(
            e.message.contains(DURATION_SYNTAX) && !e.to_string().contains('\n'),
            "{e}"
        );
    }

    #[test]
    fn validation_names_the_flag() {
        let bad = |f: fn(&mut Config), flag: &str| {
            let mut c = Config::default();
            f(&mut c);
            assert_eq!(c.validate().unwrap_err().flag, flag);
        };
        bad(|c| c.shards = 0, "--shards");
        bad(|c| c.max_connections = Some(0), "--max-connections");
        bad(|c| c.pong_timeout = Duration::ZERO, "--pong-timeout");
        bad(|c| c.max_message_bytes = 0, "--max-message-bytes");
        bad(|c| c.max_outbox_bytes = 10, "--max-outbox-bytes");
        bad(|c| c.history = 2_000_000, "--history");
        bad(|c| c.publish_token = Some("a b".into()), "--publish-token");
        bad(
            |c| c.allowed_origins = vec![String::new()],
            "--allowed-origin",
        );
    }
}
