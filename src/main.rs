//! The `ringpush` command line: parse, validate, call into the library, print clear
//! errors. Every bad value is one line naming the flag, exit code 2.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use ringpush::config::{Config, Overrides, parse_duration_arg};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// WebSocket + Server-Sent Events push server on io_uring.
#[derive(Debug, Parser)]
#[command(name = "ringpush", version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// `ringpush` alone is `ringpush serve`.
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server (the default).
    Serve(ServeArgs),
    /// Open many client connections and measure the server.
    Load(LoadArgs),
    /// Compare this machine's limits with a target connection count.
    Check(CheckArgs),
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// TOML file with the same keys as the flags (`ping-interval = "20s"`); flags win.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to bind, IPv4 or IPv6 [default: 127.0.0.1:8080].
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Shards: one pinned thread + io_uring ring each [default: CPUs in the affinity mask].
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    shards: Option<usize>,
    /// Beyond it, new connections get 503 + Retry-After [default: sized from limits].
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    max_connections: Option<usize>,
    /// A WebSocket silent this long gets a ping [default: 30s].
    #[arg(long, value_name = "D", value_parser = parse_duration_arg, allow_hyphen_values = true)]
    ping_interval: Option<Duration>,
    /// Silence this long after a ping closes the connection [default: 10s].
    #[arg(long, value_name = "D", value_parser = parse_duration_arg, allow_hyphen_values = true)]
    pong_timeout: Option<Duration>,
    /// SSE comment heartbeat period [default: 15s].
    #[arg(long, value_name = "D", value_parser = parse_duration_arg, allow_hyphen_values = true)]
    sse_heartbeat: Option<Duration>,
    /// Base of the SSE retry hint, jittered per client [default: 3s].
    #[arg(long, value_name = "D", value_parser = parse_duration_arg, allow_hyphen_values = true)]
    sse_retry: Option<Duration>,
    /// A request head not complete by then closes the connection [default: 10s].
    #[arg(long, value_name = "D", value_parser = parse_duration_arg, allow_hyphen_values = true)]
    handshake_timeout: Option<Duration>,
    /// Larger WebSocket message: close 1009; larger publish body: 413 [default: 1048576].
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    max_message_bytes: Option<usize>,
    /// Per-connection queued bytes before the slow-consumer policy acts [default: 4194304].
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    max_outbox_bytes: Option<usize>,
    /// Events kept per topic for replay [default: 1024].
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    history: Option<usize>,
    /// If set, POST /publish requires `Authorization: Bearer T`.
    #[arg(long, value_name = "T")]
    publish_token: Option<String>,
    /// Repeatable; a WebSocket/SSE request with another Origin gets 403 [default: any].
    #[arg(long = "allowed-origin", value_name = "O")]
    allowed_origins: Vec<String>,
    /// Validate the configuration (file + flags), print it and exit, like `nginx -t`.
    #[arg(long)]
    check_config: bool,
    /// Graceful shutdown budget [default: 10s].
    #[arg(long, value_name = "D", value_parser = parse_duration_arg, allow_hyphen_values = true)]
    drain_timeout: Option<Duration>,
}

impl ServeArgs {
    fn into_overrides(self) -> (Option<PathBuf>, bool, Overrides) {
        let overrides = Overrides {
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
            history: self.history,
            publish_token: self.publish_token,
            allowed_origins: (!self.allowed_origins.is_empty()).then_some(self.allowed_origins),
            drain_timeout: self.drain_timeout,
        };
        (self.config, self.check_config, overrides)
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
    /// Reconnect storm after a server restart: how reconnects spread.
    Storm,
}

#[derive(Debug, Args)]
struct LoadArgs {
    /// Target: ws://HOST:PORT/PATH for WebSocket, http://HOST:PORT/sse/TOPIC for SSE.
    #[arg(long, value_name = "URL", default_value = "ws://127.0.0.1:8080/echo")]
    url: String,
    #[arg(long, value_enum, default_value_t = Scenario::Echo)]
    scenario: Scenario,
    /// Connections to open.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 100,
        allow_hyphen_values = true
    )]
    connections: u64,
    /// Connection attempts per second.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 10_000,
        allow_hyphen_values = true
    )]
    rate: u64,
    /// How long to run after all connections are open.
    #[arg(long, value_name = "D", default_value = "10s", value_parser = parse_duration_arg, allow_hyphen_values = true)]
    duration: Duration,
    /// Payload size of each message.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 32,
        allow_hyphen_values = true
    )]
    message_bytes: usize,
    /// Source addresses 127.0.0.1..127.0.0.N: each gives ~28,000 ports toward one server
    /// port, so 1,000,000 connections need at least 36.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 1,
        allow_hyphen_values = true
    )]
    source_addrs: u32,
    /// First reconnect delay (doubles per attempt).
    #[arg(long, value_name = "D", default_value = "100ms", value_parser = parse_duration_arg, allow_hyphen_values = true)]
    backoff_base: Duration,
    /// Longest reconnect delay.
    #[arg(long, value_name = "D", default_value = "30s", value_parser = parse_duration_arg, allow_hyphen_values = true)]
    backoff_cap: Duration,
    /// Reconnect at exactly the backoff delay (to show the thundering herd).
    #[arg(long)]
    no_jitter: bool,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct CheckArgs {
    /// Target concurrent connections.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 1_000_000,
        allow_hyphen_values = true
    )]
    connections: u64,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e)
            if matches!(
                e.kind(),
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion
            ) =>
        {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // clap's message is several lines (usage, tips); its first line names the flag.
            // The accepted values, when clap lists them, go on the same line.
            let text = e.render().to_string();
            let first = text.lines().next().unwrap_or("invalid arguments");
            let mut line = first.strip_prefix("error: ").unwrap_or(first).to_owned();
            if let Some(values) = text
                .lines()
                .map(str::trim)
                .find(|l| l.starts_with("[possible values"))
            {
                line.push(' ');
                line.push_str(values);
            }
            eprintln!("ringpush: {line}");
            return ExitCode::from(2);
        }
    };
    match cli.command.unwrap_or(Command::Serve(cli.serve)) {
        Command::Serve(args) => serve(args),
        Command::Load(args) => {
            if args.connections == 0
                || args.rate == 0
                || args.source_addrs == 0
                || args.source_addrs > 254 * 254
            {
                eprintln!(
                    "ringpush: --connections, --rate and --source-addrs must be at least 1 (--source-addrs at most 64516)"
                );
                return ExitCode::from(2);
            }
            let _ = (
                args.url,
                args.scenario,
                args.duration,
                args.message_bytes,
                args.backoff_base,
                args.backoff_cap,
                args.no_jitter,
                args.json,
            );
            eprintln!("ringpush: the load generator is not built yet");
            ExitCode::from(1)
        }
        Command::Check(args) => {
            let _ = (args.connections, args.json);
            eprintln!("ringpush: check is not built yet");
            ExitCode::from(1)
        }
    }
}

fn serve(args: ServeArgs) -> ExitCode {
    let (file, check_config, overrides) = args.into_overrides();
    let config = match Config::from_sources(file.as_deref(), overrides) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ringpush: {e}");
            return ExitCode::from(2);
        }
    };
    if check_config {
        println!(
            "configuration ok: listen {}, {} shards, ping {:?}, pong timeout {:?}, max message {} bytes",
            config.listen,
            config.shards,
            config.ping_interval,
            config.pong_timeout,
            config.max_message_bytes
        );
        return ExitCode::SUCCESS;
    }
    match ringpush::server::run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ringpush: {e}");
            ExitCode::from(1)
        }
    }
}
