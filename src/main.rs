//! The `ringpush` command line: parse, validate, call into the library, print clear
//! errors (DESIGN.md "Command line"). A bad flag or config value is one stderr line
//! naming the flag and the accepted values, exit code 2; the parsers themselves live in
//! `ringpush::config` so a TOML file gets the same messages.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};
use ringpush::config::{self, Config, CountRange, DurationRange, Overrides};
use ringpush::load;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit code for a bad flag or configuration value, as for any usage error.
const USAGE: u8 = 2;

/// WebSocket + Server-Sent Events push server on io_uring.
///
/// `ringpush` alone is `ringpush serve`.
#[derive(Debug, Parser)]
#[command(name = "ringpush", version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

// Parsed once at startup: the size of the largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server (the default).
    Serve(ServeArgs),
    /// Open many client connections and measure the server.
    Load(LoadArgs),
    /// Compare this machine's limits with a target connection count.
    Check(CheckArgs),
}

// Flags are `Option`s without clap defaults so that an absent flag leaves the TOML
// file's value in place; the defaults are shown in the help text instead.
// `allow_hyphen_values` lets `--history -1` reach our parser (which names the accepted
// values) instead of clap reading `-1` as an unknown flag.
#[derive(Debug, Args)]
struct ServeArgs {
    /// TOML file with the same keys as the flags (`ping-interval = "20s"`); flags win.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to bind, IPv4 or IPv6 [default: 127.0.0.1:8080].
    #[arg(long, value_name = "ADDR", value_parser = config::parse_listen)]
    listen: Option<SocketAddr>,
    /// Shards: one pinned thread + io_uring ring each [default: CPUs in the affinity mask].
    #[arg(long, value_name = "N", value_parser = |s: &str| config::SHARDS.parse(s), allow_hyphen_values = true)]
    shards: Option<usize>,
    /// Beyond it, new connections get 503 + Retry-After [default: sized from limits].
    #[arg(long, value_name = "N", value_parser = |s: &str| config::MAX_CONNECTIONS.parse(s), allow_hyphen_values = true)]
    max_connections: Option<usize>,
    /// A WebSocket silent this long gets a ping [default: 30s].
    #[arg(long, value_name = "D", value_parser = |s: &str| config::PING_INTERVAL.parse(s), allow_hyphen_values = true)]
    ping_interval: Option<Duration>,
    /// No frame this long after a ping closes the connection [default: 10s].
    #[arg(long, value_name = "D", value_parser = |s: &str| config::PONG_TIMEOUT.parse(s), allow_hyphen_values = true)]
    pong_timeout: Option<Duration>,
    /// SSE comment heartbeat period [default: 15s].
    #[arg(long, value_name = "D", value_parser = |s: &str| config::SSE_HEARTBEAT.parse(s), allow_hyphen_values = true)]
    sse_heartbeat: Option<Duration>,
    /// Base of the SSE retry hint, randomised per client [default: 3s].
    #[arg(long, value_name = "D", value_parser = |s: &str| config::SSE_RETRY.parse(s), allow_hyphen_values = true)]
    sse_retry: Option<Duration>,
    /// A request head not complete by then closes the connection [default: 10s].
    #[arg(long, value_name = "D", value_parser = |s: &str| config::HANDSHAKE_TIMEOUT.parse(s), allow_hyphen_values = true)]
    handshake_timeout: Option<Duration>,
    /// Larger WebSocket message: close 1009; larger publish body: 413 [default: 1048576].
    #[arg(long, value_name = "N", value_parser = |s: &str| config::MAX_MESSAGE_BYTES.parse(s), allow_hyphen_values = true)]
    max_message_bytes: Option<usize>,
    /// Per-connection queued bytes before the slow-consumer policy acts [default: 4194304].
    #[arg(long, value_name = "N", value_parser = |s: &str| config::MAX_OUTBOX_BYTES.parse(s), allow_hyphen_values = true)]
    max_outbox_bytes: Option<usize>,
    /// An outbox over its cap this long (a client that sends and never reads): cut,
    /// WebSocket close 1008 [default: 10s].
    #[arg(long, value_name = "D", value_parser = |s: &str| config::OUTBOX_TIMEOUT.parse(s), allow_hyphen_values = true)]
    outbox_timeout: Option<Duration>,
    /// Events kept per topic for replay; 0 disables replay [default: 1024].
    #[arg(long, value_name = "N", value_parser = |s: &str| config::HISTORY.parse(s), allow_hyphen_values = true)]
    history: Option<usize>,
    /// Forget a topic with no subscriber and no publish for this long [default: never].
    #[arg(long, value_name = "D", value_parser = |s: &str| config::HISTORY_TTL.parse(s), allow_hyphen_values = true)]
    history_ttl: Option<Duration>,
    /// Memory for retained events and topics, all shards together; past it the oldest
    /// events go [default: 134217728].
    #[arg(long, value_name = "BYTES", value_parser = |s: &str| config::HISTORY_MEMORY.parse(s), allow_hyphen_values = true)]
    history_memory: Option<usize>,
    /// If set, POST /publish requires `Authorization: Bearer T` [default: none].
    #[arg(long, value_name = "T")]
    publish_token: Option<String>,
    /// HS256 key for client tokens; better from the environment (not in the process
    /// list). With it or --jwt-public-key every topic needs a token [default: none:
    /// anyone may subscribe and publish].
    #[arg(
        long,
        value_name = "S",
        env = "RINGPUSH_JWT_SECRET",
        hide_env_values = true
    )]
    jwt_secret: Option<String>,
    /// PEM public key for client tokens: RSA (RS256), EC P-256 (ES256), Ed25519 (EdDSA).
    #[arg(long, value_name = "FILE", value_parser = |s: &str| config::parse_nonempty(s).map(std::path::PathBuf::from))]
    jwt_public_key: Option<std::path::PathBuf>,
    /// PEM certificate chain (leaf first): the port then speaks TLS only (wss://,
    /// https://); reloaded with --tls-key on SIGHUP [default: plain TCP].
    #[arg(long, value_name = "FILE", value_parser = |s: &str| config::parse_nonempty(s).map(std::path::PathBuf::from))]
    tls_cert: Option<std::path::PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", value_parser = |s: &str| config::parse_nonempty(s).map(std::path::PathBuf::from))]
    tls_key: Option<std::path::PathBuf>,
    /// A token's `iss` must be this [default: any].
    #[arg(long, value_name = "ISS", value_parser = config::parse_nonempty)]
    jwt_issuer: Option<String>,
    /// A token's `aud` must include this [default: any].
    #[arg(long, value_name = "AUD", value_parser = config::parse_nonempty)]
    jwt_audience: Option<String>,
    /// Serve /metrics and /healthz on this address only (404 on the main port)
    /// [default: on the main port].
    #[arg(long, value_name = "ADDR", value_parser = config::parse_listen)]
    admin_listen: Option<SocketAddr>,
    /// Repeatable; a WebSocket/SSE request with another Origin gets 403 [default: any].
    #[arg(long = "allowed-origin", value_name = "O", value_parser = config::parse_origin)]
    allowed_origins: Vec<String>,
    /// Graceful shutdown budget [default: 10s].
    #[arg(long, value_name = "D", value_parser = |s: &str| config::DRAIN_TIMEOUT.parse(s), allow_hyphen_values = true)]
    drain_timeout: Option<Duration>,
    /// Cluster mode: the Redis that carries every node's events, redis://HOST:PORT/DB
    /// [default: one node, history in memory].
    #[arg(long, value_name = "URL", value_parser = config::parse_redis_url)]
    redis: Option<String>,
    /// This node's name in logs and metrics [default: HOSTNAME-PID].
    #[arg(long, value_name = "NAME", value_parser = config::parse_node_id)]
    node_id: Option<String>,
    /// Every connection must start with a PROXY protocol header (v2 or v1) giving the
    /// client's address; without one it is closed. Only for a port that the proxy
    /// alone can reach.
    #[arg(long)]
    proxy_protocol: bool,
    /// Repeatable; believe X-Forwarded-For from peers in this range (10.0.0.0/8, or one
    /// address) [default: none: the header is ignored].
    #[arg(long = "trusted-proxy", value_name = "CIDR", value_parser = ringpush::proto::proxy::Cidr::parse)]
    trusted_proxies: Vec<ringpush::proto::proxy::Cidr>,
    /// A line on stderr per WebSocket/SSE open and close and per refused request, with
    /// the client's address [default: off].
    #[arg(long)]
    access_log: bool,
    /// permessage-deflate: `shared` accepts it without context takeover, each published
    /// message compressed once per shard; `off` declines [default: shared].
    #[arg(long, value_name = "MODE", value_parser = config::parse_compression)]
    compression: Option<ringpush::proto::deflate::CompressionMode>,
    /// Messages shorter than this are sent uncompressed [default: 128].
    #[arg(long, value_name = "N", value_parser = |s: &str| config::COMPRESSION_MIN_BYTES.parse(s), allow_hyphen_values = true)]
    compression_min_bytes: Option<usize>,
    /// Check the configuration (file + flags), print it as TOML and exit, like `nginx -t`.
    #[arg(long)]
    check_config: bool,
}

impl ServeArgs {
    fn overrides(&self) -> Overrides {
        Overrides {
            listen: self.listen,
            shards: self.shards,
            max_connections: self.max_connections,
            ping_interval: self.ping_interval,
            pong_timeout: self.pong_timeout,
            sse_heartbeat: self.sse_heartbeat,
            sse_retry: self.sse_retry,
            handshake_timeout: self.handshake_timeout,
            max_message_bytes: self.max_message_bytes,
            max_outbox_bytes: self.max_outbox_bytes,
            outbox_timeout: self.outbox_timeout,
            history: self.history,
            history_ttl: self.history_ttl,
            history_memory: self.history_memory,
            publish_token: self.publish_token.clone(),
            jwt_secret: self.jwt_secret.clone(),
            jwt_public_key: self.jwt_public_key.clone(),
            jwt_issuer: self.jwt_issuer.clone(),
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
            jwt_audience: self.jwt_audience.clone(),
            admin_listen: self.admin_listen,
            allowed_origins: (!self.allowed_origins.is_empty())
                .then(|| self.allowed_origins.clone()),
            drain_timeout: self.drain_timeout,
            redis: self.redis.clone(),
            node_id: self.node_id.clone(),
            proxy_protocol: self.proxy_protocol.then_some(true),
            trusted_proxies: (!self.trusted_proxies.is_empty())
                .then(|| self.trusted_proxies.clone()),
            access_log: self.access_log.then_some(true),
            compression: self.compression,
            compression_min_bytes: self.compression_min_bytes,
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Scenario {
    /// Hold connections; report the server's memory per connection.
    Idle,
    /// Request/response latency and rate.
    Echo,
    /// One publisher, N subscribers: delivery rate and latency.
    Broadcast,
    /// Reconnect storm after a server restart, or after --cut-after: how reconnects
    /// spread; event streams are checked for exact resumption.
    Storm,
}

const LOAD_CONNECTIONS: CountRange = CountRange {
    flag: "--connections",
    min: 1,
    max: usize::MAX,
};
const RATE: CountRange = CountRange {
    flag: "--rate",
    min: 1,
    max: usize::MAX,
};
/// 0 is a real case (empty messages); above 1 GiB the server refuses anyway.
const MESSAGE_BYTES: CountRange = CountRange {
    flag: "--message-bytes",
    min: 0,
    max: 1 << 30,
};
/// 127.0.0.1 to 127.0.0.254.
const SOURCE_ADDRS: CountRange = CountRange {
    flag: "--source-addrs",
    min: 1,
    max: 254,
};
/// A run may soak for days; a year bounds the arithmetic.
const RUN_DURATION: DurationRange = DurationRange {
    flag: "--duration",
    min: Duration::from_millis(1),
    max: Duration::from_secs(365 * 86_400),
};
const MESSAGES: CountRange = CountRange {
    flag: "--messages",
    min: 1,
    max: usize::MAX,
};
const THREADS: CountRange = CountRange {
    flag: "--threads",
    min: 1,
    max: 1024,
};
const POLL_INTERVAL: DurationRange = DurationRange {
    flag: "--poll-interval",
    min: Duration::from_millis(1),
    max: Duration::from_secs(3600),
};
const BACKOFF_BASE: DurationRange = DurationRange {
    flag: "--backoff-base",
    min: Duration::from_millis(1),
    max: Duration::from_secs(3600),
};
const BACKOFF_CAP: DurationRange = DurationRange {
    flag: "--backoff-cap",
    ..BACKOFF_BASE
};
/// Topic names end in the topic's number: 10 million keeps them short.
const TOPICS: CountRange = CountRange {
    flag: "--topics",
    min: 1,
    max: 10_000_000,
};

/// `--publish-rate`: one rate, or the steps of a row.
#[derive(Debug, Clone)]
struct Rates(Vec<usize>);

fn parse_rates(text: &str) -> Result<Rates, String> {
    let rates = text
        .split(',')
        .map(|r| RATE.parse(r.trim()))
        .collect::<Result<Vec<usize>, String>>()
        .map_err(|e| format!("{e}, or a comma-separated list of them"))?;
    Ok(Rates(rates))
}

const CUT_AFTER: DurationRange = DurationRange {
    flag: "--cut-after",
    ..RUN_DURATION
};

#[derive(Debug, Args)]
struct LoadArgs {
    /// Target: ws://HOST:PORT/PATH for WebSocket, http://HOST:PORT/sse/TOPIC for SSE;
    /// wss:// and https:// over TLS (port 443 by default; needs --tls-ca or
    /// --tls-insecure). Repeatable (the nodes of a cluster, same scheme and path on each): connection
    /// i starts on URL i mod n, the publisher on the first; a reconnect goes to another (a dead node's clients spread over the rest).
    #[arg(long = "url", value_name = "URL", default_value = "ws://127.0.0.1:8080/echo", value_parser = parse_url)]
    urls: Vec<String>,
    /// What to measure.
    #[arg(long, value_enum, default_value_t = Scenario::Echo)]
    scenario: Scenario,
    /// Connections to open.
    #[arg(long, value_name = "N", default_value = "100", value_parser = |s: &str| LOAD_CONNECTIONS.parse(s), allow_hyphen_values = true)]
    connections: usize,
    /// Connection attempts per second.
    #[arg(long, value_name = "N", default_value = "10000", value_parser = |s: &str| RATE.parse(s), allow_hyphen_values = true)]
    rate: usize,
    /// How long to run once every connection is open.
    #[arg(long, value_name = "D", default_value = "10s", value_parser = |s: &str| RUN_DURATION.parse(s), allow_hyphen_values = true)]
    duration: Duration,
    /// Payload bytes of each message.
    #[arg(long, value_name = "N", default_value = "32", value_parser = |s: &str| MESSAGE_BYTES.parse(s), allow_hyphen_values = true)]
    message_bytes: usize,
    /// Source addresses 127.0.0.1..=127.0.0.N. Each gives one ephemeral port range
    /// (about 28,000 ports by default) toward the server's one port
    /// [default: as many as --connections needs under ip_local_port_range].
    #[arg(long, value_name = "N", value_parser = |s: &str| SOURCE_ADDRS.parse(s), allow_hyphen_values = true)]
    source_addrs: Option<usize>,
    /// First reconnect delay; it doubles per failed attempt.
    #[arg(long, value_name = "D", default_value = "100ms", value_parser = |s: &str| BACKOFF_BASE.parse(s), allow_hyphen_values = true)]
    backoff_base: Duration,
    /// Longest reconnect delay.
    #[arg(long, value_name = "D", default_value = "30s", value_parser = |s: &str| BACKOFF_CAP.parse(s), allow_hyphen_values = true)]
    backoff_cap: Duration,
    /// Reconnect after exactly the backoff delay, to show the thundering herd that
    /// jitter prevents.
    #[arg(long)]
    no_jitter: bool,
    /// How connections end: `drop` (the process exits and the kernel closes them) or
    /// `close` (every WebSocket sends a close frame at once and waits for the server to
    /// close; the report says how long that took).
    #[arg(long, value_name = "HOW", default_value = "drop", value_parser = ["drop", "close"])]
    leave: String,
    /// Broadcast: publish this many messages, then stop (with the drain, the time until
    /// the last subscriber has them) [default: publish for --duration].
    #[arg(long, value_name = "N", value_parser = |s: &str| MESSAGES.parse(s).map(|n| n as u64), allow_hyphen_values = true)]
    messages: Option<u64>,
    /// Short polling (a /poll/ URL without wait=): pause between an answer and the next
    /// request.
    #[arg(long, value_name = "D", default_value = "1s", value_parser = |s: &str| POLL_INTERVAL.parse(s), allow_hyphen_values = true)]
    poll_interval: Duration,
    /// Broadcast: publish at most N messages per second [default: as fast as 8 messages
    /// in flight allow]; a comma-separated list (1000,5000,20000) runs each rate in turn
    /// for --duration on the same connections, with a drain between, and reports each
    /// step. Storm: a publisher on /ws/TOPIC publishes N per second throughout, whoever
    /// is connected [default: no publisher].
    #[arg(long, value_name = "N[,N...]", value_parser = parse_rates, allow_hyphen_values = true)]
    publish_rate: Option<Rates>,
    /// Broadcast: subscriber i subscribes to TOPIC-(i mod N), TOPIC being the URL's, and
    /// HTTP publishers (POST /publish/TOPIC-k, pipelined) publish round-robin over the N
    /// topics; 1: everyone on TOPIC, one WebSocket publisher.
    #[arg(long, value_name = "N", default_value = "1", value_parser = |s: &str| TOPICS.parse(s), allow_hyphen_values = true)]
    topics: usize,
    /// Storm: D into the run, cut every subscriber at once (the load generator closes
    /// the sockets, as a network blip would); each reconnects after its backoff delay,
    /// an event stream with Last-Event-ID [default: wait for a server restart].
    #[arg(long, value_name = "D", value_parser = |s: &str| CUT_AFTER.parse(s), allow_hyphen_values = true)]
    cut_after: Option<Duration>,
    /// Worker threads, each with its own rings [default: CPUs in the affinity mask].
    #[arg(long, value_name = "N", value_parser = |s: &str| THREADS.parse(s), allow_hyphen_values = true)]
    threads: Option<usize>,
    /// WebSockets offer permessage-deflate (as browsers do) and inflate what the server
    /// compresses; the report's wire bytes per message then show what compression saves.
    #[arg(long)]
    compression: bool,
    /// Messages carry JSON text after their timestamp (objects of ids, symbols and
    /// prices, like a market-data feed) instead of repeated `x`, which deflate would
    /// shrink to nothing.
    #[arg(long)]
    json_payload: bool,
    /// wss:// and https://: trust the CA certificates in this PEM file (the server's
    /// certificate must name the URL's host).
    #[arg(long, value_name = "FILE", value_parser = |s: &str| config::parse_nonempty(s).map(std::path::PathBuf::from))]
    tls_ca: Option<std::path::PathBuf>,
    /// wss:// and https://: accept any server certificate (benchmarks against a
    /// self-signed server; signatures are still checked, so a handshake costs what a
    /// verified one does).
    #[arg(long)]
    tls_insecure: bool,
    /// wss:// and https://: resume TLS sessions with the tickets earlier connections
    /// received [default: a full handshake per connection, as distinct clients make].
    #[arg(long)]
    tls_resume: bool,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct CheckArgs {
    /// Target concurrent connections.
    #[arg(long, value_name = "N", default_value = "1000000", value_parser = |s: &str| LOAD_CONNECTIONS.parse(s), allow_hyphen_values = true)]
    connections: usize,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

/// A load target: WebSocket or SSE, plain or over TLS.
fn parse_url(text: &str) -> Result<String, String> {
    let rest = ["ws://", "wss://", "http://", "https://"]
        .iter()
        .find_map(|scheme| text.strip_prefix(scheme));
    let host = rest.map(|r| r.split(['/', '?']).next().unwrap_or(""));
    match host {
        Some(h) if !h.is_empty() && !h.contains(char::is_whitespace) => Ok(text.to_owned()),
        _ => Err(
            "expected ws[s]://HOST:PORT/PATH (WebSocket) or http[s]://HOST:PORT/sse/TOPIC (SSE)"
                .into(),
        ),
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => return usage_error(&one_line(&e)),
    };
    match cli.command.unwrap_or(Command::Serve(cli.serve)) {
        Command::Serve(args) => serve(&args),
        Command::Load(args) => load(&args),
        Command::Check(args) => {
            let findings = ringpush::check::check(args.connections as u64);
            if args.json {
                print!("{}", ringpush::check::render_json(&findings));
            } else {
                print!("{}", ringpush::check::render_human(&findings));
            }
            ExitCode::from(ringpush::check::exit_code(&findings))
        }
    }
}

fn usage_error(line: &str) -> ExitCode {
    eprintln!("ringpush: {line}");
    ExitCode::from(USAGE)
}

/// clap's message in one line. Its rendered error is several lines (usage, tips); the
/// first names the flag, and the parts worth keeping from the rest (accepted values,
/// "did you mean") are in the error's context.
fn one_line(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let first = text.lines().next().unwrap_or("invalid arguments");
    let mut line = first.strip_prefix("error: ").unwrap_or(first).to_owned();
    let strings = |kind| match e.get(kind) {
        Some(ContextValue::String(s)) => vec![s.clone()],
        Some(ContextValue::Strings(v)) => v.clone(),
        _ => Vec::new(),
    };
    let valid = strings(ContextKind::ValidValue);
    if !valid.is_empty() {
        line += &format!("; expected one of: {}", valid.join(", "));
    }
    let suggested: Vec<String> = [
        ContextKind::SuggestedValue,
        ContextKind::SuggestedArg,
        ContextKind::SuggestedSubcommand,
    ]
    .into_iter()
    .flat_map(strings)
    .collect();
    if !suggested.is_empty() {
        line += &format!("; did you mean '{}'?", suggested.join("' or '"));
    } else if e.kind() == ErrorKind::InvalidSubcommand {
        let names: Vec<String> = Cli::command()
            .get_subcommands()
            .map(|c| c.get_name().to_owned())
            .filter(|n| n != "help")
            .collect();
        line += &format!("; expected one of: {}", names.join(", "));
    } else if e.kind() == ErrorKind::UnknownArgument {
        line += "; see 'ringpush --help'";
    }
    line
}

fn serve(args: &ServeArgs) -> ExitCode {
    let config = match Config::from_sources(args.config.as_deref(), &args.overrides()) {
        Ok(c) => c,
        Err(e) => return usage_error(&e.to_string()),
    };
    if args.check_config {
        // Valid TOML as a whole, so it can seed a --config file.
        println!(
            "# ringpush: configuration ok (listen {}, {} shards)",
            config.listen, config.shards
        );
        for w in config.warnings() {
            println!("# warning: {w}");
        }
        print!("{}", config.to_toml());
        return ExitCode::SUCCESS;
    }
    match ringpush::server::run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ringpush: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn load(args: &LoadArgs) -> ExitCode {
    if args.backoff_cap < args.backoff_base {
        return usage_error(&format!(
            "--backoff-cap: expected at least --backoff-base ({}), got {}",
            config::format_duration(args.backoff_base),
            config::format_duration(args.backoff_cap)
        ));
    }
    if let Err(e) = load::check_urls(&args.urls) {
        return usage_error(&e);
    }
    if let Err(e) = load::client_tls(
        &args.urls,
        args.tls_ca.as_deref(),
        args.tls_insecure,
        args.tls_resume,
    ) {
        return usage_error(&e);
    }
    let cfg = load::LoadConfig {
        urls: args.urls.clone(),
        scenario: match args.scenario {
            Scenario::Idle => load::Scenario::Idle,
            Scenario::Echo => load::Scenario::Echo,
            Scenario::Broadcast => load::Scenario::Broadcast,
            Scenario::Storm => load::Scenario::Storm,
        },
        connections: args.connections,
        rate: args.rate,
        duration: args.duration,
        message_bytes: args.message_bytes,
        messages: args.messages,
        poll_interval: args.poll_interval,
        publish_rates: (args.publish_rate.iter())
            .flat_map(|r| r.0.iter().map(|&n| n as f64))
            .collect(),
        topics: args.topics,
        cut_after: args.cut_after,
        source_addrs: args.source_addrs,
        backoff: load::Backoff {
            base: args.backoff_base,
            cap: args.backoff_cap,
            jitter: !args.no_jitter,
        },
        threads: args.threads,
        compression: args.compression,
        json_payload: args.json_payload,
        progress: true,
        leave: args.leave == "close",
        tls_ca: args.tls_ca.clone(),
        tls_insecure: args.tls_insecure,
        tls_resume: args.tls_resume,
    };
    match load::run(&cfg) {
        Ok(report) => {
            if args.json {
                println!("{}", report.json());
            } else {
                print!("{}", report.human());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ringpush load: {e}");
            ExitCode::FAILURE
        }
    }
}
