//! `scripts/tune.sh` as an operator runs it: `check` reports every limit through
//! `ringpush check` and changes nothing; `apply` then `restore` (as root) puts every
//! sysctl back exactly as it was. The state file goes to a temporary path through
//! `RINGPUSH_TUNE_STATE`, so a real saved state in /var/tmp is never touched.
//!
//! `RINGPUSH_BIN` in the environment overrides the binary under test (by default the
//! one Cargo built for this test run).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;

/// `apply` changes sysctls that `check` must see unchanged: one test at a time.
static SYSCTLS: Mutex<()> = Mutex::new(());

/// The findings `ringpush check` reports, in order.
const NAMES: [&str; 13] = [
    "io_uring",
    "kernel.io_uring_disabled",
    "RLIMIT_NOFILE",
    "RLIMIT_MEMLOCK",
    "fs.nr_open",
    "fs.file-max",
    "net.core.somaxconn",
    "net.ipv4.tcp_max_syn_backlog",
    "net.core.netdev_max_backlog",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.tcp_mem",
    "net.netfilter.nf_conntrack_max",
    "MemAvailable",
];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn binary() -> String {
    std::env::var("RINGPUSH_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_ringpush").to_owned())
}

fn tune(args: &[&str], state: Option<&Path>) -> Output {
    let mut cmd = Command::new(root().join("scripts/tune.sh"));
    cmd.args(args).env("RINGPUSH_BIN", binary());
    match state {
        Some(p) => cmd.env("RINGPUSH_TUNE_STATE", p),
        None => cmd.env_remove("RINGPUSH_TUNE_STATE"),
    };
    cmd.output().expect("run scripts/tune.sh")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The settings of tuning/99-ringpush.conf: (key, value), values with single spaces.
fn conf() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(root().join("tuning/99-ringpush.conf")).unwrap();
    text.lines()
        .map(|l| l.split('#').next().unwrap().trim())
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (k, v) = l.split_once('=').expect("key = value");
            (k.trim().trim_start_matches('-').to_owned(), normalize(v))
        })
        .collect()
}

fn normalize(v: &str) -> String {
    v.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The live value of each conf key that exists on this kernel.
fn snapshot() -> Vec<(String, Option<String>)> {
    conf()
        .into_iter()
        .map(|(k, _)| {
            let path = format!("/proc/sys/{}", k.replace('.', "/"));
            let v = std::fs::read_to_string(path).ok().map(|v| normalize(&v));
            (k, v)
        })
        .collect()
}

#[test]
fn check_reports_every_limit_and_changes_nothing() {
    let _lock = SYSCTLS.lock().unwrap_or_else(|e| e.into_inner());
    let default_state = Path::new("/var/tmp/ringpush-tune.saved");
    let state_before = default_state.exists();
    let before = snapshot();

    let o = tune(&["check", "1000000"], None);
    let out = text(&o.stdout);
    let code = o.status.code().expect("exit code");
    assert!(
        (0..=2).contains(&code),
        "exit {code}: {out}{}",
        text(&o.stderr)
    );

    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("STATUS  NAME"), "{out}");
    let mut rows = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        let mut words = l.split_whitespace();
        let (Some(status), Some(name)) = (words.next(), words.next()) else {
            continue;
        };
        if !["ok", "warn", "fail"].contains(&status) {
            continue;
        }
        rows.push(name);
        if status != "ok" {
            assert!(
                lines[i + 1].trim_start().starts_with("why: "),
                "{name}: a reason follows a {status}: {out}"
            );
        }
    }
    assert_eq!(rows, NAMES, "{out}");

    // "9 ok, 4 warn, 0 fail (exit 1; ...)": the counts add up and match the exit code.
    let summary = lines.last().unwrap();
    let nums: Vec<usize> = summary
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    assert_eq!(nums.len(), 4, "{summary}");
    assert_eq!(nums[0] + nums[1] + nums[2], NAMES.len(), "{summary}");
    assert_eq!(nums[3], code as usize, "{summary}");
    let want = if nums[2] > 0 {
        2
    } else if nums[1] > 0 {
        1
    } else {
        0
    };
    assert_eq!(code, want, "{summary}");

    let o = tune(&["check", "1000", "--json"], None);
    let json = text(&o.stdout);
    assert!(json.starts_with("{\"status\":\""), "{json}");
    assert!(json.ends_with("]}\n"), "{json}");
    assert_eq!(json.matches("\"name\":").count(), NAMES.len(), "{json}");
    let code = o.status.code().unwrap();
    assert!(json.contains(&format!("\"exit_code\":{code},")), "{json}");

    assert_eq!(snapshot(), before, "check must not change any sysctl");
    assert_eq!(
        default_state.exists(),
        state_before,
        "check must not write state"
    );
}

#[test]
fn usage_errors_exit_2_with_one_line() {
    for (args, needle) in [
        (&["frobnicate"][..], "unknown command 'frobnicate'"),
        (&["check", "lots"][..], "N must be a positive whole number"),
        (&["apply", "0"][..], "N must be a positive whole number"),
        (&["restore", "now"][..], "restore takes no arguments"),
    ] {
        let o = tune(args, Some(Path::new("/nonexistent/state")));
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.starts_with("tune.sh: "), "{args:?}: {err}");
        assert!(
            err.lines().next().unwrap().contains(needle),
            "{args:?}: {err}"
        );
    }
    let o = tune(&[], None);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).starts_with("usage: "));
    let o = tune(&["--help"], None);
    assert_eq!(o.status.code(), Some(0));
    assert!(text(&o.stdout).contains("RINGPUSH_TUNE_STATE"));
}

/// Runs `restore` if the test fails between `apply` and its own `restore`, so a failed
/// assertion never leaves the machine tuned.
struct RestoreGuard(PathBuf);

impl Drop for RestoreGuard {
    fn drop(&mut self) {
        if self.0.exists() {
            let o = tune(&["restore"], Some(&self.0));
            eprintln!("guard restore: {}{}", text(&o.stdout), text(&o.stderr));
        }
    }
}

#[test]
fn apply_then_restore_puts_every_value_back() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        println!("SKIP: apply/restore write /proc/sys and need root");
        return;
    }
    let _lock = SYSCTLS.lock().unwrap_or_else(|e| e.into_inner());
    let state =
        std::env::temp_dir().join(format!("ringpush-tune-test-{}.saved", std::process::id()));
    let _ = std::fs::remove_file(&state);
    let before = snapshot();

    let o = tune(&["apply", "1000"], Some(&state));
    let guard = RestoreGuard(state.clone());
    let out = text(&o.stdout);
    assert!(o.status.success(), "apply: {out}{}", text(&o.stderr));
    let saved = std::fs::read_to_string(&state).expect("apply writes the state file");

    // Every key now has the file's value, except a number that was already larger.
    for ((key, target), (_, old)) in conf().iter().zip(&before) {
        let Some(old) = old else {
            assert!(out.contains(&format!("skip  {key}")), "{out}");
            continue;
        };
        assert!(
            saved.contains(&format!("{key} = {old}\n")),
            "{key} saved: {saved}"
        );
        let now = snapshot()
            .into_iter()
            .find(|(k, _)| k == key)
            .unwrap()
            .1
            .unwrap();
        let kept = matches!(
            (old.parse::<u64>(), target.parse::<u64>()),
            (Ok(o), Ok(t)) if o > t && key != "kernel.io_uring_disabled"
        );
        if kept {
            assert_eq!(&now, old, "{key}: a larger value is kept");
        } else {
            assert_eq!(&now, target, "{key}: set from the file");
        }
    }

    // A second apply must not overwrite the saved originals.
    let o = tune(&["apply"], Some(&state));
    assert_eq!(o.status.code(), Some(1), "second apply refused");
    assert!(text(&o.stderr).contains("exists"), "{}", text(&o.stderr));
    assert_eq!(std::fs::read_to_string(&state).unwrap(), saved);

    let o = tune(&["restore"], Some(&state));
    assert!(
        o.status.success(),
        "restore: {}{}",
        text(&o.stdout),
        text(&o.stderr)
    );
    assert!(!state.exists(), "restore removes the state file");
    drop(guard);
    assert_eq!(snapshot(), before, "every value is back");

    let o = tune(&["restore"], Some(&state));
    assert_eq!(o.status.code(), Some(1), "nothing to restore");
    assert!(text(&o.stderr).contains("nothing to restore"));
}
