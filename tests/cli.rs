//! The command line, run as a user would (DESIGN.md "Command line"): a bad flag or
//! config value is exactly one stderr line naming the flag and the accepted values,
//! with exit code 2. Valid configurations are checked with `--check-config`; a server
//! is started only to show that a second one refuses its port.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

fn ringpush(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ringpush"))
        .args(args)
        .output()
        .expect("run ringpush")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Exit 2 and exactly one stderr line, starting `ringpush: ` and containing every
/// `needle`; nothing on stdout.
fn assert_usage_error(args: &[&str], needles: &[&str]) -> String {
    usage_error_of(args, &ringpush(args), needles)
}

/// As [`assert_usage_error`], for a command that would run a server if it did not
/// refuse: still running after `within` fails the test (and is killed) instead of
/// hanging it.
fn assert_refused_within(args: &[&str], needles: &[&str], within: Duration) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ringpush"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ringpush");
    let deadline = Instant::now() + within;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let o = child.wait_with_output().unwrap();
            panic!(
                "{args:?}: still running after {within:?} instead of refusing: {}",
                text(&o.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    usage_error_of(args, &child.wait_with_output().unwrap(), needles)
}

fn usage_error_of(args: &[&str], o: &Output, needles: &[&str]) -> String {
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
    assert_eq!(err.lines().count(), 1, "{args:?}: one line, got {err:?}");
    assert!(err.starts_with("ringpush: "), "{args:?}: {err:?}");
    assert!(o.stdout.is_empty(), "{args:?}: {:?}", text(&o.stdout));
    for n in needles {
        assert!(err.contains(n), "{args:?}: {err:?} lacks {n:?}");
    }
    err
}

/// A TOML file with a name no other test (or concurrent run) uses, removed on drop.
struct TempToml(PathBuf);

impl TempToml {
    fn new(contents: &str) -> TempToml {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "ringpush-cli-{}-{}.toml",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&path, contents).unwrap();
        TempToml(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempToml {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `--check-config` output: exit 0, TOML on stdout.
fn checked(args: &[&str]) -> String {
    let mut all = args.to_vec();
    all.push("--check-config");
    let o = ringpush(&all);
    assert_eq!(o.status.code(), Some(0), "{args:?}: {}", text(&o.stderr));
    text(&o.stdout)
}

#[test]
fn bad_serve_values() {
    let err = assert_usage_error(&["--ping-interval", "abc"], &["'--ping-interval", "500ms"]);
    assert!(err.contains("'abc'"), "names the value: {err}");
    assert_usage_error(
        &["serve", "--pong-timeout", "1.5s"],
        &["--pong-timeout", "30s"],
    );
    assert_usage_error(&["--ping-interval", "0s"], &["--ping-interval", "from 1ms"]);
    assert_usage_error(&["--ping-interval=-1"], &["--ping-interval"]);
    assert_usage_error(&["--drain-timeout", "25h"], &["--drain-timeout", "to 24h"]);
    assert_usage_error(&["--shards", "0"], &["--shards", "from 1 to 1024"]);
    assert_usage_error(&["serve", "--shards", "1025"], &["--shards", "1 to 1024"]);
    assert_usage_error(&["--listen", "nope"], &["--listen", "127.0.0.1:8080"]);
    assert_usage_error(&["--listen", "8080"], &["--listen", "[::]:8080"]);
    assert_usage_error(
        &["--max-message-bytes", "-1"],
        &["--max-message-bytes", "1073741824"],
    );
    assert_usage_error(
        &["--max-outbox-bytes", "10"],
        &["--max-outbox-bytes", "at least 1024"],
    );
    assert_usage_error(
        &["--max-connections", "0"],
        &["--max-connections", "at least 1"],
    );
    assert_usage_error(&["--history", "x"], &["--history", "from 0 to 1000000"]);
    assert_usage_error(&["--history", "1000001"], &["--history"]);
    assert_usage_error(
        &["--history-ttl", "500ms"],
        &["--history-ttl", "from 1s to 720h"],
    );
    assert_usage_error(
        &["--allowed-origin", "https://a.example/"],
        &["--allowed-origin", "no path"],
    );
    let err = assert_usage_error(
        &["--publish-token", "se cret"],
        &["--publish-token", "visible ASCII"],
    );
    assert!(!err.contains("se cret"), "a secret is not echoed: {err}");
    assert_usage_error(&["--listen"], &["--listen", "value is required"]);
}

#[test]
fn bad_load_and_check_values() {
    assert_usage_error(
        &["load", "--scenario", "bogus"],
        &["--scenario", "idle, echo, broadcast, storm"],
    );
    assert_usage_error(
        &["load", "--scenario", "ech"],
        &["--scenario", "did you mean 'echo'"],
    );
    assert_usage_error(
        &["load", "--connections", "0"],
        &["--connections", "at least 1"],
    );
    assert_usage_error(&["load", "--rate", "-5"], &["--rate"]);
    assert_usage_error(&["load", "--duration", "forever"], &["--duration", "500ms"]);
    assert_usage_error(
        &["load", "--message-bytes", "x"],
        &["--message-bytes", "from 0"],
    );
    assert_usage_error(
        &["load", "--source-addrs", "255"],
        &["--source-addrs", "1 to 254"],
    );
    assert_usage_error(&["load", "--backoff-cap", "forever"], &["--backoff-cap"]);
    assert_usage_error(
        &["load", "--backoff-base", "1s", "--backoff-cap", "500ms"],
        &["--backoff-cap", "--backoff-base"],
    );
    assert_usage_error(
        &["load", "--url", "ftp://a.example/ws/t"],
        &["--url", "ws[s]://", "http[s]://"],
    );
    assert_usage_error(
        &["load", "--url", "wss://a.example/ws/t"],
        &["--tls-ca", "--tls-insecure"],
    );
    // Several URLs: one topic on every node, over one transport.
    for second in ["ws://127.0.0.1:2/ws/b", "http://127.0.0.1:2/sse/a"] {
        assert_usage_error(
            &["load", "--url", "ws://127.0.0.1:1/ws/a", "--url", second],
            &[
                &format!("--url {second}: "),
                "scheme and path of the first (ws://127.0.0.1:1/ws/a)",
            ],
        );
    }
    assert_usage_error(
        &["check", "--connections", "x"],
        &["--connections", "whole number"],
    );
    assert_usage_error(&["check", "--listen", "127.0.0.1:1"], &["--listen"]);
    assert_usage_error(
        &["--trusted-proxy", "10.0.0.0/33"],
        &["--trusted-proxy", "CIDR range like 10.0.0.0/8"],
    );
}

#[test]
fn unknown_flags_and_commands() {
    assert_usage_error(&["--no-such-flag"], &["--no-such-flag", "--help"]);
    assert_usage_error(
        &["--listn", "127.0.0.1:1"],
        &["--listn", "did you mean '--listen'"],
    );
    assert_usage_error(&["load", "--jsn"], &["--jsn", "--json"]);
    assert_usage_error(&["bogus"], &["bogus", "serve, load, check"]);
    assert_usage_error(&["serv"], &["serv", "did you mean 'serve'"]);
}

#[test]
fn toml_errors() {
    let unknown = TempToml::new("listen = \"127.0.0.1:1\"\nping-intervall = \"1s\"\n");
    assert_usage_error(
        &["--config", unknown.path()],
        &[
            "--config",
            "unknown key `ping-intervall`",
            "`ping-interval`",
            "line 2",
            unknown.path(),
        ],
    );
    let bad = TempToml::new("# comment\npong-timeout = \"later\"\n");
    assert_usage_error(
        &["--config", bad.path()],
        &["--pong-timeout", "500ms", "\"later\"", "line 2"],
    );
    let range = TempToml::new("shards = 0\n");
    assert_usage_error(
        &["serve", "--config", range.path()],
        &["--shards", "1 to 1024", "line 1"],
    );
    let kind = TempToml::new("history = 1.5\n");
    assert_usage_error(&["--config", kind.path()], &["--history", "got 1.5"]);
    let syntax = TempToml::new("listen = \n");
    assert_usage_error(&["--config", syntax.path()], &["--config", "line 1"]);
    let token = TempToml::new("publish-token = \"two words\"\n");
    let err = assert_usage_error(&["--config", token.path()], &["--publish-token"]);
    assert!(!err.contains("two words"), "a secret is not echoed: {err}");
    assert_usage_error(
        &["--config", "/nonexistent/ringpush.toml"],
        &["--config", "cannot read", "/nonexistent/ringpush.toml"],
    );
    // A bad file value is an error even when a flag overrides it: the file is broken.
    assert_usage_error(
        &["--config", bad.path(), "--pong-timeout", "5s"],
        &["--pong-timeout"],
    );
}

#[test]
fn flags_override_the_file() {
    let file = TempToml::new(
        "listen = \"127.0.0.9:7000\"\nshards = 3\nping-interval = \"20s\"\nhistory = 7\nhistory-ttl = \"1h\"\nallowed-origin = [\"https://a.example\", \"https://b.example\"]\n",
    );
    let out = checked(&[
        "--config",
        file.path(),
        "--listen",
        "127.0.0.8:9000",
        "--history",
        "0",
        "--allowed-origin",
        "https://c.example",
    ]);
    assert!(
        out.starts_with("# ringpush: configuration ok (listen 127.0.0.8:9000, 3 shards)\n"),
        "{out}"
    );
    for line in [
        "listen = \"127.0.0.8:9000\"",
        "shards = 3",
        "ping-interval = \"20s\"",
        "pong-timeout = \"10s\"",
        "history = 0",
        "history-ttl = \"1h\"",
        "allowed-origin = [\"https://c.example\"]",
    ] {
        assert!(
            out.lines().any(|l| l == line),
            "{line:?} missing from:\n{out}"
        );
    }
}

#[test]
fn check_config_output_reads_back() {
    let out = checked(&[
        "serve",
        "--shards",
        "2",
        "--max-connections",
        "5000",
        "--sse-retry",
        "1500ms",
        "--drain-timeout",
        "2m",
        "--publish-token",
        "s3cr3t",
        "--allowed-origin",
        "https://a.example",
        "--proxy-protocol",
        "--trusted-proxy",
        "10.0.0.0/8",
        "--trusted-proxy",
        "fd00::/8",
        "--access-log",
    ]);
    assert!(!out.contains("s3cr3t"), "the token is not printed:\n{out}");
    assert!(out.contains("proxy-protocol = true"), "{out}");
    assert!(
        out.contains("trusted-proxy = [\"10.0.0.0/8\", \"fd00::/8\"]"),
        "{out}"
    );
    assert!(out.contains("access-log = true"), "{out}");
    assert!(out.contains("max-connections = 5000"), "{out}");
    assert!(out.contains("sse-retry = \"1500ms\""), "{out}");
    assert!(out.contains("drain-timeout = \"2m\""), "{out}");
    let file = TempToml::new(&out);
    assert_eq!(
        checked(&["--config", file.path(), "--publish-token", "s3cr3t"]),
        out,
        "the printed configuration is a config file for the same configuration"
    );
}

#[test]
fn check_config_warns_about_a_tiny_outbox() {
    let out = checked(&["--max-outbox-bytes", "4096"]);
    assert!(
        out.lines()
            .any(|l| l.starts_with("# warning: --max-outbox-bytes 4096")),
        "{out}"
    );
    assert!(!checked(&[]).contains("warning"));
}

/// Load-generator mistakes are one line and exit 1, quickly: a scenario that does not
/// fit the URL, too few source addresses, a server that is not there.
#[test]
fn load_errors_are_one_line() {
    for (args, expect) in [
        (
            &[
                "load",
                "--url",
                "http://127.0.0.1:1/sse/t",
                "--scenario",
                "echo",
            ][..],
            "SSE and polling are one-way",
        ),
        (
            &[
                "load",
                "--url",
                "ws://127.0.0.1:1/echo",
                "--scenario",
                "broadcast",
            ],
            "ws://HOST:PORT/ws/TOPIC or http://HOST:PORT/sse/TOPIC",
        ),
        (
            &[
                "load",
                "--url",
                "ws://127.0.0.1:1/echo",
                "--connections",
                "1000000",
                "--source-addrs",
                "1",
            ],
            "use at least",
        ),
        (
            &[
                "load",
                "--url",
                "ws://127.0.0.1:1/echo",
                "--connections",
                "5",
                "--backoff-base",
                "50ms",
                "--backoff-cap",
                "50ms",
            ],
            "no connection to ws://127.0.0.1:1/echo could be opened: connect: Connection refused",
        ),
    ] {
        let t0 = std::time::Instant::now();
        let o = ringpush(args);
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{err:?}");
        assert!(err.contains(expect), "{err}");
        assert!(t0.elapsed() < std::time::Duration::from_secs(10));
    }
}

/// `ringpush check --json` is one JSON object with every limit; exit 0, 1 or 2.
#[test]
fn check_json() {
    let o = ringpush(&["check", "--connections", "5", "--json"]);
    let out = text(&o.stdout);
    assert!(matches!(o.status.code(), Some(0..=2)), "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    let findings = v["findings"].as_array().expect("findings array");
    assert!(findings.iter().any(|f| f["name"] == "io_uring"), "{out}");
    assert!(findings.len() >= 10);
}

#[test]
fn help_and_version() {
    let o = ringpush(&["--help"]);
    assert_eq!(o.status.code(), Some(0));
    let out = text(&o.stdout);
    for flag in [
        "--config",
        "--listen",
        "--shards",
        "--max-connections",
        "--ping-interval",
        "--pong-timeout",
        "--sse-heartbeat",
        "--sse-retry",
        "--handshake-timeout",
        "--max-message-bytes",
        "--max-outbox-bytes",
        "--history",
        "--publish-token",
        "--allowed-origin",
        "--drain-timeout",
        "--proxy-protocol",
        "--trusted-proxy",
        "--access-log",
        "serve",
        "load",
        "check",
    ] {
        assert!(out.contains(flag), "--help lacks {flag}");
    }
    let o = ringpush(&["--version"]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(
        text(&o.stdout).trim(),
        format!("ringpush {}", env!("CARGO_PKG_VERSION"))
    );
    for sub in ["serve", "load", "check"] {
        let o = ringpush(&[sub, "--help"]);
        assert_eq!(o.status.code(), Some(0), "{sub} --help");
    }
    let load = text(&ringpush(&["load", "--help"]).stdout);
    for flag in [
        "--url",
        "--scenario",
        "--connections",
        "--rate",
        "--duration",
        "--message-bytes",
        "--source-addrs",
        "--backoff-base",
        "--backoff-cap",
        "--no-jitter",
        "--json",
    ] {
        assert!(load.contains(flag), "load --help lacks {flag}");
    }
    assert!(Path::new(env!("CARGO_BIN_EXE_ringpush")).exists());
}

/// A port where another process listens is refused with one line naming it, exit 2:
/// SO_REUSEPORT must not let the server join someone else's port.
#[test]
fn a_port_in_use_is_refused() {
    // A plain listener (std sets SO_REUSEADDR, not SO_REUSEPORT).
    let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = other.local_addr().unwrap();
    let line = format!(
        "ringpush: --listen {addr}: address already in use (another process listens on port {})\n",
        addr.port()
    );
    let err = assert_refused_within(
        &["serve", "--listen", &addr.to_string(), "--shards", "2"],
        &[],
        Duration::from_secs(10),
    );
    assert_eq!(err, line);
    // The default subcommand too.
    let err = assert_refused_within(
        &["--listen", &addr.to_string()],
        &[],
        Duration::from_secs(10),
    );
    assert_eq!(err, line);
    drop(other);
}

/// A second ringpush on the port of a running one refuses to start, and the first keeps
/// serving alone.
#[test]
fn a_second_server_on_the_same_port_is_refused() {
    let Some(first) = common::Server::start(&["--shards", "2"]) else {
        return;
    };
    let addr = first.addr;
    for shards in ["1", "2"] {
        let err = assert_refused_within(
            &["serve", "--listen", &addr.to_string(), "--shards", shards],
            &[],
            Duration::from_secs(10),
        );
        assert_eq!(
            err,
            format!(
                "ringpush: --listen {addr}: address already in use (another process listens on port {})\n",
                addr.port()
            )
        );
    }
    for _ in 0..20 {
        let resp = common::http(addr, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(resp.starts_with("HTTP/1.1 200 "), "{resp}");
    }
}
