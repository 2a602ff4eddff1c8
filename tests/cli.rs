//! The command line, run as a user would: one-line errors naming the flag, exit code 2.

use std::process::{Command, Output};

fn ringpush(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ringpush"))
        .args(args)
        .output()
        .expect("run ringpush")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Exit 2 and exactly one stderr line that contains every `needle`.
fn assert_usage_error(args: &[&str], needles: &[&str]) {
    let o = ringpush(args);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
    assert_eq!(err.lines().count(), 1, "{args:?}: one line, got {err:?}");
    for n in needles {
        assert!(err.contains(n), "{args:?}: {err:?} lacks {n:?}");
    }
}

fn temp_toml(name: &str, text: &str) -> std::path::PathBuf {
    let path =
        std::env::temp_dir().join(format!("ringpush-cli-{}-{name}.toml", std::process::id()));
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn bad_flag_values() {
    assert_usage_error(&["--ping-interval", "abc"], &["--ping-interval", "500ms"]);
    assert_usage_error(&["serve", "--pong-timeout", "1.5s"], &["--pong-timeout"]);
    assert_usage_error(&["--shards", "0"], &["--shards", "1 to 1024"]);
    assert_usage_error(&["--listen", "nope"], &["--listen"]);
    assert_usage_error(&["--max-message-bytes", "-1"], &["--max-message-bytes"]);
    assert_usage_error(&["--history", "x"], &["--history"]);
    assert_usage_error(&["--publish-token", "a b"], &["--publish-token"]);
    assert_usage_error(&["--ping-interval", "0s"], &["--ping-interval"]);
    assert_usage_error(&["load", "--scenario", "bogus"], &["--scenario", "idle"]);
    assert_usage_error(&["load", "--backoff-cap", "forever"], &["--backoff-cap"]);
    assert_usage_error(&["check", "--connections", "x"], &["--connections"]);
    assert_usage_error(&["--no-such-flag"], &["--no-such-flag"]);
}

#[test]
fn toml_errors() {
    let unknown = temp_toml(
        "unknown",
        "listen = \"127.0.0.1:1\"\nping-intervall = \"1s\"\n",
    );
    assert_usage_error(
        &["--config", unknown.to_str().unwrap()],
        &["--config", "ping-intervall"],
    );
    let bad = temp_toml("bad", "pong-timeout = \"later\"\n");
    assert_usage_error(&["--config", bad.to_str().unwrap()], &["--config", "500ms"]);
    assert_usage_error(
        &["--config", "/nonexistent/ringpush.toml"],
        &["--config", "cannot read"],
    );
    let _ = std::fs::remove_file(unknown);
    let _ = std::fs::remove_file(bad);
}

#[test]
fn flags_override_the_file() {
    let file = temp_toml(
        "ok",
        "listen = \"127.0.0.9:7000\"\nshards = 3\nping-interval = \"20s\"\n",
    );
    let o = ringpush(&[
        "--config",
        file.to_str().unwrap(),
        "--listen",
        "127.0.0.8:9000",
        "--check-config",
    ]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        out.contains("listen 127.0.0.8:9000, 3 shards, ping 20s"),
        "{out}"
    );
    let _ = std::fs::remove_file(file);
}

#[test]
fn help_and_version() {
    let o = ringpush(&["--help"]);
    assert_eq!(o.status.code(), Some(0));
    let out = String::from_utf8_lossy(&o.stdout);
    for flag in [
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
        "--config",
    ] {
        assert!(out.contains(flag), "--help lacks {flag}");
    }
    assert_eq!(ringpush(&["--version"]).status.code(), Some(0));
    assert_eq!(ringpush(&["load", "--help"]).status.code(), Some(0));
}
