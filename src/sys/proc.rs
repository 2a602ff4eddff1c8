//! Every `/proc` reader: `/proc/meminfo`, `/proc/sys/*` (sysctls), `/proc/PID/status`
//! and `/proc/PID/stat`, and `/proc/net/tcp{,6}` for a listener's process.
//!
//! Each reader is a file read and a pure parser; the parsers are tested on sample text
//! below, so a format detail (a `kB` suffix, a command name with spaces in `stat`) is
//! pinned down once. A value that cannot be read or parsed is `None`: the callers
//! (`ringpush check`, the load generator's report, the server's defaults) each have a
//! fallback or say "could not be read".

#![forbid(unsafe_code)]

use std::fs;

/// A field of `/proc/meminfo` in KiB (`MemTotal`, `MemAvailable`, `Slab`, ...).
pub fn meminfo_kib(field: &str) -> Option<u64> {
    kib_field(&fs::read_to_string("/proc/meminfo").ok()?, field)
}

/// The kernel's slab memory in bytes (`Slab` in /proc/meminfo): sockets, their inodes,
/// dentries and files, io_uring requests. System-wide, so other activity adds noise.
pub fn slab_bytes() -> Option<u64> {
    meminfo_kib("Slab").map(|k| k * 1024)
}

/// `/proc/sys/{path}` as text without the trailing newline (`kernel/osrelease`).
pub fn sysctl_str(path: &str) -> Option<String> {
    let text = fs::read_to_string(format!("/proc/sys/{path}")).ok()?;
    Some(text.trim().to_owned())
}

/// `/proc/sys/{path}` as whitespace-separated numbers (`net/ipv4/tcp_mem`); `None`
/// when any field is not a number.
pub fn sysctl_fields(path: &str) -> Option<Vec<u64>> {
    numbers(&fs::read_to_string(format!("/proc/sys/{path}")).ok()?)
}

/// `/proc/sys/{path}` holding exactly one number (`fs/file-max`).
pub fn sysctl_u64(path: &str) -> Option<u64> {
    match sysctl_fields(path)?[..] {
        [v] => Some(v),
        _ => None,
    }
}

/// `net.ipv4.ip_local_port_range` as (low, high), inclusive.
pub fn port_range() -> Option<(u64, u64)> {
    match sysctl_fields("net/ipv4/ip_local_port_range")?[..] {
        [lo, hi] => Some((lo, hi)),
        _ => None,
    }
}

/// The kernel release (`kernel.osrelease`, e.g. `6.8.0-49-generic`).
pub fn kernel_release() -> Option<String> {
    sysctl_str("kernel/osrelease")
}

/// `kernel.io_uring_disabled`: 0 enabled, 1 only for root and `kernel.io_uring_group`,
/// 2 disabled; `None` before Linux 6.6, which has no such switch.
pub fn io_uring_disabled() -> Option<u64> {
    sysctl_u64("kernel/io_uring_disabled")
}

/// A field of `/proc/PID/status` (`VmRSS`, `CapEff`), its value trimmed.
pub fn status_field(pid: u32, field: &str) -> Option<String> {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    field_value(&text, field).map(str::to_owned)
}

/// Resident memory of `pid` in bytes (`VmRSS`).
pub fn rss_bytes(pid: u32) -> Option<u64> {
    kib(&status_field(pid, "VmRSS")?).map(|k| k * 1024)
}

/// The effective capability set of `pid` (`CapEff`, a hex bit mask).
pub fn cap_effective(pid: u32) -> Option<u64> {
    u64::from_str_radix(&status_field(pid, "CapEff")?, 16).ok()
}

/// CPU time of `pid` (user + system, all threads) in seconds, from `/proc/PID/stat`.
pub fn cpu_secs(pid: u32) -> Option<f64> {
    let ticks = stat_cpu_ticks(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)?;
    let hz = super::clock_ticks_per_sec()?;
    Some(ticks as f64 / hz as f64)
}

/// The PID of the process listening on TCP `port` on this host: the socket inode from
/// `/proc/net/tcp{,6}`, then the process holding it among `/proc/*/fd`. (The listener is
/// an ordinary descriptor even in ringpush, whose connections are not.) Our own process
/// is skipped.
pub fn listener_pid(port: u16) -> Option<u32> {
    let mut inodes = Vec::new();
    for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
        if let Ok(text) = fs::read_to_string(file) {
            inodes.extend(listening_inodes(&text, port).map(|i| format!("socket:[{i}]")));
        }
    }
    if inodes.is_empty() {
        return None;
    }
    let me = std::process::id();
    for entry in fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(fds) = fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(link) = fs::read_link(fd.path()) {
                if inodes.iter().any(|i| link.as_os_str() == i.as_str()) {
                    return Some(pid);
                }
            }
        }
    }
    None
}

/// Whitespace-separated numbers; `None` if any is not one.
fn numbers(text: &str) -> Option<Vec<u64>> {
    text.split_whitespace().map(|f| f.parse().ok()).collect()
}

/// The value of a `Name:  value` line (the format of `/proc/meminfo` and
/// `/proc/PID/status`), trimmed.
fn field_value<'a>(text: &'a str, field: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .map(str::trim)
}

/// `1234 kB` as 1234.
fn kib(value: &str) -> Option<u64> {
    value.trim_end_matches("kB").trim().parse().ok()
}

/// A `Name:  1234 kB` field in KiB.
fn kib_field(text: &str, field: &str) -> Option<u64> {
    kib(field_value(text, field)?)
}

/// utime + stime, in clock ticks, from the text of `/proc/PID/stat`.
fn stat_cpu_ticks(text: &str) -> Option<u64> {
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let rest = text.get(text.rfind(')')? + 2..)?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// Inodes of the sockets in LISTEN state on `port`, from the text of `/proc/net/tcp` or
/// `/proc/net/tcp6`.
fn listening_inodes(text: &str, port: u16) -> impl Iterator<Item = &str> {
    text.lines().skip(1).filter_map(move |line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        // local_address is "HEXIP:HEXPORT"; state 0A is LISTEN; field 9 the inode.
        let local_port = f.get(1)?.rsplit(':').next()?;
        (f.len() > 9 && f[3] == "0A" && u16::from_str_radix(local_port, 16).ok() == Some(port))
            .then_some(f[9])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_value_fields() {
        let meminfo = "MemTotal:       16312344 kB\nMemAvailable:    9876543 kB\nSlab:  1024 kB\n";
        assert_eq!(kib_field(meminfo, "MemTotal"), Some(16_312_344));
        assert_eq!(kib_field(meminfo, "MemAvailable"), Some(9_876_543));
        assert_eq!(kib_field(meminfo, "Slab"), Some(1024));
        // A prefix of another field's name is not that field.
        assert_eq!(kib_field(meminfo, "Mem"), None);
        let status = "Name:\tcat\nVmRSS:\t    2048 kB\nCapEff:\t000001ffffffffff\n";
        assert_eq!(kib_field(status, "VmRSS"), Some(2048));
        assert_eq!(field_value(status, "CapEff"), Some("000001ffffffffff"));
        assert_eq!(field_value(status, "VmHWM"), None);
    }

    #[test]
    fn sysctl_numbers() {
        assert_eq!(numbers("32768\t60999\n"), Some(vec![32768, 60999]));
        assert_eq!(
            numbers("9223372036854775807\n"),
            Some(vec![i64::MAX as u64])
        );
        assert_eq!(numbers("6.8.0\n"), None);
    }

    #[test]
    fn stat_cpu_ticks_skip_a_command_name_with_spaces_and_parentheses() {
        let stat = "4242 (a b) c)) S 1 4242 4242 0 -1 4194560 100 0 0 0 70 30 0 0 20 0 1 0";
        assert_eq!(stat_cpu_ticks(stat), Some(100));
        assert_eq!(stat_cpu_ticks("4242 (x) S 1"), None);
        assert_eq!(stat_cpu_ticks("no name"), None);
    }

    #[test]
    fn listening_inodes_match_port_and_state() {
        let tcp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 111 1 0 100 0 0 10 0
   1: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000  1000        0 222 1 0 20 4 30 10 -1
   2: 00000000:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 333 1 0 100 0 0 10 0
";
        assert_eq!(listening_inodes(tcp, 8080).collect::<Vec<_>>(), ["111"]);
        assert_eq!(listening_inodes(tcp, 80).collect::<Vec<_>>(), ["333"]);
        assert_eq!(listening_inodes(tcp, 81).count(), 0);
    }

    #[test]
    fn live_values_are_read() {
        let me = std::process::id();
        assert!(meminfo_kib("MemTotal").unwrap() > 0);
        assert!(slab_bytes().unwrap() > 0);
        assert!(rss_bytes(me).unwrap() > 0);
        assert!(cap_effective(me).is_some());
        assert!(cpu_secs(me).is_some());
        assert!(sysctl_u64("fs/file-max").is_some());
        assert!(!kernel_release().unwrap().is_empty());
        let (lo, hi) = port_range().unwrap();
        assert!(lo < hi);
        // Our own listener is skipped (pid == me), so the lookup must say None.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        assert_eq!(listener_pid(l.local_addr().unwrap().port()), None);
    }
}
