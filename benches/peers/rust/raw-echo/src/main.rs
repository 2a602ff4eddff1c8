//! Kernel-budget baseline for the ringpush comparison: a TCP echo server on io_uring that
//! does NO protocol work (no HTTP, no WebSocket: it writes back exactly the bytes it
//! read), and the closed-loop client that measures it.
//!
//! ```text
//! raw-echo --listen 127.0.0.1:PORT --threads N
//! raw-echo client --connect 127.0.0.1:PORT --connections 100 --message-bytes 32 --duration 10s --threads N
//! raw-echo ws --listen 127.0.0.1:PORT --threads N --max-conns 1000000
//! ```
//!
//! `raw-echo ws` is the same budget for WebSocket traffic, driven by `ringpush load`
//! itself: see `ws.rs`.
//!
//! A WebSocket server's echo rate on the same machine, divided by this one's, is the
//! fraction of the kernel's budget the server leaves unused by protocol work
//! (STYLE.md, "Before claiming a server number, measure the kernel's own budget").
//!
//! Message size: `--message-bytes` is the WebSocket payload being emulated. The client
//! sends what a WebSocket client sends for it: a masked frame header (2 + 4 bytes up to
//! 125 bytes of payload) plus the payload, 38 bytes for the default 32. A raw echo returns
//! those same 38 bytes, so a round trip moves 76 bytes where a WebSocket echo moves 72
//! (the server's 34-byte reply is unmasked); both are one small segment each way, and the
//! 4 bytes do not measurably change the cost of a loopback round trip.

mod client;
mod server;
mod sys;
mod ws;

use clap::{Parser, Subcommand};
use peer_common::ServerArgs;

#[derive(Debug, Parser)]
#[command(
    name = "raw-echo",
    about = "io_uring TCP echo with no protocol work (the kernel-budget baseline), and its client",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    server: ServerArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Closed-loop echo client: one message in flight per connection; prints one JSON line.
    Client(client::ClientArgs),
    /// The WebSocket kernel baseline: handshake, then echo pre-built frames on /echo and
    /// fan one frame out to every held connection on /ws/{topic}, with ringpush's driver.
    Ws(ws::WsArgs),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Client(args)) => client::run(&args),
        Some(Command::Ws(args)) => ws::run(&args),
        None => server::run(&cli.server),
    };
    if let Err(e) = result {
        eprintln!("raw-echo: {e}");
        std::process::exit(1);
    }
}
