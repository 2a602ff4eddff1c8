//! Findings from a [`SystemLimits`] snapshot: pure, no system reads, tested boundary by
//! boundary below.

use super::{
    BYTES_PER_CONNECTION, Finding, NOFILE_BEST, NOFILE_WARN, PORT_RANGE_FIX, SOURCE_ADDRESSES,
    Status, SystemLimits,
};
use crate::server::shard::{BACKLOG, RESERVE};

/// Judges `sys` against `connections` concurrent connections (pure; see the module doc
/// for the same-host assumption). The order is the order of the report.
pub fn evaluate(connections: u64, sys: &SystemLimits) -> Vec<Finding> {
    let n = connections.max(1);
    vec![
        io_uring_probe(sys),
        io_uring_disabled(sys),
        nofile(n, sys),
        memlock(n, sys),
        nr_open(sys),
        file_max(n, sys),
        simple_min(
            "net.core.somaxconn",
            sys.somaxconn,
            u64::from(BACKLOG),
            "ringpush listens with a backlog of 4096 per shard and the kernel silently caps \
             it at somaxconn; a reconnect burst beyond the cap has its SYNs dropped and \
             retried after 1 s, 3 s, 7 s, which stretches a storm into minutes",
        ),
        simple_min(
            "net.ipv4.tcp_max_syn_backlog",
            sys.tcp_max_syn_backlog,
            u64::from(BACKLOG),
            "half-open connections kept per listener; below one shard's listen queue \
             (4096) a connection burst overflows into SYN cookies (logged as 'possible SYN \
             flooding') or, with tcp_syncookies=0, into dropped SYNs",
        ),
        simple_min(
            "net.core.netdev_max_backlog",
            sys.netdev_max_backlog,
            u64::from(BACKLOG),
            "packets queued per CPU between the network device (loopback included) and \
             TCP; a reconnect storm arrives as a burst of SYNs and handshakes, and this \
             queue should hold at least one shard's listen queue (4096) or packets are \
             dropped before TCP sees them (second column of /proc/net/softnet_stat)",
        ),
        port_range(n, sys),
        tcp_mem(n, sys),
        conntrack(n, sys),
        memory(n, sys),
    ]
}

fn io_uring_probe(sys: &SystemLimits) -> Finding {
    let why = "ringpush does all its I/O through io_uring (multishot accept into direct \
               descriptors, provided-buffer receive); the probe sets up a ring with the \
               server's own flags (SINGLE_ISSUER, DEFER_TASKRUN) and checks every opcode \
               it uses";
    match &sys.io_uring {
        Ok(()) => Finding {
            name: "io_uring",
            status: Status::Ok,
            current: "available (server's flags and opcodes)".into(),
            needed: "available".into(),
            fix: None,
            why,
        },
        Err(e) => Finding {
            name: "io_uring",
            status: Status::Fail,
            current: e.clone(),
            needed: "available".into(),
            fix: (sys.io_uring_disabled.unwrap_or(0) != 0)
                .then(|| "sysctl -w kernel.io_uring_disabled=0".to_owned()),
            why,
        },
    }
}

fn io_uring_disabled(sys: &SystemLimits) -> Finding {
    let (status, current) = match sys.io_uring_disabled {
        None => (
            Status::Ok,
            "absent (kernels before 6.6 have no switch)".to_owned(),
        ),
        Some(0) => (Status::Ok, "0 (enabled for everyone)".to_owned()),
        Some(1) => (
            Status::Warn,
            "1 (only root and the kernel.io_uring_group group)".to_owned(),
        ),
        Some(v) => (Status::Fail, format!("{v} (disabled for everyone)")),
    };
    Finding {
        name: "kernel.io_uring_disabled",
        status,
        current,
        needed: "0".into(),
        fix: (status != Status::Ok).then(|| "sysctl -w kernel.io_uring_disabled=0".to_owned()),
        why: "2 disables io_uring for every process (ringpush cannot start); 1 allows it only \
              for root and members of kernel.io_uring_group. Some distributions disable it \
              because io_uring has had many kernel CVEs: enabling it is a security decision",
    }
}

/// Slots per fixed-file table the server will use for a hard RLIMIT_NOFILE: it raises
/// its soft limit to the hard one, and the kernel caps a table at 2^20.
fn table_slots(hard: u64) -> u64 {
    hard.min(NOFILE_BEST)
}

/// Tables needed for `n` connections over `cpus` shards (the default: one per CPU), each
/// shard with its share of `n` and at least one table of its own; [`RESERVE`] slots of
/// each table are kept for 503 answers.
fn tables_for(n: u64, slots: u64, cpus: u64) -> u64 {
    let cpus = cpus.max(1);
    let usable = slots.saturating_sub(u64::from(RESERVE)).max(1);
    cpus * n.div_ceil(cpus).div_ceil(usable).max(1)
}

fn nofile(n: u64, sys: &SystemLimits) -> Finding {
    let why = "NOT a connection cap: ringpush accepts into io_uring fixed-file tables \
               (direct descriptors), which use no process file descriptors, and adds a \
               table whenever one fills. A table holds at most RLIMIT_NOFILE slots (kernel \
               rule; ringpush raises the soft limit to the hard one), so this sets the table \
               size: below 4096 the number of tables, each with its own ring and 4 MiB of \
               receive buffers, wastes memory. These are this shell's limits; a systemd \
               service gets LimitNOFILE= instead (tuning/ringpush.service)";
    let needed = format!("hard >= {NOFILE_WARN} (best {NOFILE_BEST})");
    let fix_value = sys
        .nr_open
        .map_or(NOFILE_BEST, |o| o.min(NOFILE_BEST))
        .max(NOFILE_WARN);
    let fix = Some(format!("ulimit -n {fix_value}"));
    let Some((soft, hard)) = sys.nofile else {
        return unreadable("RLIMIT_NOFILE", needed, why);
    };
    let slots = table_slots(hard);
    let status = if slots <= u64::from(RESERVE) {
        Status::Fail
    } else if slots < NOFILE_WARN {
        Status::Warn
    } else {
        Status::Ok
    };
    let current = if status == Status::Fail {
        format!(
            "soft {}, hard {}: the server refuses to start below {} slots",
            limit(soft),
            limit(hard),
            RESERVE + 1
        )
    } else {
        format!(
            "soft {}, hard {} ({} tables of {slots} slots)",
            limit(soft),
            limit(hard),
            tables_for(n, slots, sys.cpus)
        )
    };
    Finding {
        name: "RLIMIT_NOFILE",
        status,
        current,
        needed,
        fix: fix.filter(|_| status != Status::Ok),
        why,
    }
}

/// Bytes io_uring charges to RLIMIT_MEMLOCK for one ring of the server's shape: about
/// twice its SQ (64 B entries) plus CQ (16 B entries) arrays. Measured on Linux 6.18 as
/// an unprivileged user: 0.75 MiB for a shard with 4096-slot tables and 2.7 MiB with
/// 20,000 slots, within 10% of this formula. `sq` is 4096 for a shard's first ring and
/// 1024 for each further one; the CQ is `uring::table::cq_entries`.
fn ring_locked_bytes(slots: u64, sq: u64) -> u64 {
    let cq = u64::from(crate::uring::table::cq_entries(
        slots.min(u64::from(crate::uring::table::MAX_SLOTS)) as u32,
    ));
    2 * (sq * 64 + cq * 16)
}

fn memlock(n: u64, sys: &SystemLimits) -> Finding {
    let why = "io_uring charges its rings to the user's locked-memory limit (measured on \
               Linux 6.18) unless the process has CAP_IPC_LOCK (root has): too little and \
               the server cannot set up its rings (ENOMEM) or add a table when one fills \
               (new connections then get 503). Estimated for one shard per CPU and the \
               tables RLIMIT_NOFILE implies";
    let slots = sys.nofile.map_or(1024, |(_, hard)| table_slots(hard));
    let rings = tables_for(n, slots, sys.cpus);
    let cpus = sys.cpus.max(1);
    let first = ring_locked_bytes(slots, 4096);
    let total = cpus * first + (rings - cpus.min(rings)) * ring_locked_bytes(slots, 1024);
    let needed = format!("~{} ({rings} rings; without CAP_IPC_LOCK)", bytes(total));
    let (status, current) = match sys.memlock {
        _ if sys.cap_ipc_lock => (Status::Ok, "not charged (CAP_IPC_LOCK)".to_owned()),
        None => return unreadable("RLIMIT_MEMLOCK", needed, why),
        Some(u64::MAX) => (Status::Ok, "unlimited".to_owned()),
        Some(v) if v < first => (
            Status::Fail,
            format!(
                "{}: less than one ring ({}), the server cannot start",
                bytes(v),
                bytes(first)
            ),
        ),
        Some(v) if v < total => (Status::Warn, bytes(v)),
        Some(v) => (Status::Ok, bytes(v)),
    };
    Finding {
        name: "RLIMIT_MEMLOCK",
        status,
        current,
        needed,
        fix: (status != Status::Ok).then(|| "ulimit -l unlimited".to_owned()),
        why,
    }
}

fn nr_open(sys: &SystemLimits) -> Finding {
    let why = "the ceiling for RLIMIT_NOFILE: the hard limit, and with it the fixed-file \
               table size, cannot be raised above it. Direct descriptors themselves are not \
               counted against it";
    let needed = format!(">= {NOFILE_WARN}");
    let Some(v) = sys.nr_open else {
        return unreadable("fs.nr_open", needed, why);
    };
    let status = if v < NOFILE_WARN {
        Status::Warn
    } else {
        Status::Ok
    };
    Finding {
        name: "fs.nr_open",
        status,
        current: v.to_string(),
        needed,
        fix: (status != Status::Ok).then(|| format!("sysctl -w fs.nr_open={NOFILE_BEST}")),
        why,
    }
}

fn file_max(n: u64, sys: &SystemLimits) -> Finding {
    let why = "every socket is a kernel file, direct descriptor or not, and with the load \
               generator on this host each connection is two sockets (2N). Past the limit \
               unprivileged processes get ENFILE (root is exempt), and ringpush's default \
               --max-connections is half of fs.file-max. The rest of the system's open files \
               (fs.file-nr) come on top";
    let sockets = n.saturating_mul(2);
    let in_use = sys.files_in_use.unwrap_or(0);
    let want = sockets.saturating_add(in_use);
    let needed = format!(">= {want} (2 x {n} + {in_use} open now)");
    let Some(v) = sys.file_max else {
        return unreadable("fs.file-max", needed, why);
    };
    let status = if v < sockets {
        Status::Fail
    } else if v < want {
        Status::Warn
    } else {
        Status::Ok
    };
    Finding {
        name: "fs.file-max",
        status,
        current: v.to_string(),
        needed,
        fix: (status != Status::Ok)
            .then(|| format!("sysctl -w fs.file-max={}", want.next_power_of_two())),
        why,
    }
}

/// A sysctl that must be at least `min`, else warn; the fix sets it to `min`.
fn simple_min(name: &'static str, value: Option<u64>, min: u64, why: &'static str) -> Finding {
    let needed = format!(">= {min}");
    let Some(v) = value else {
        return unreadable(name, needed, why);
    };
    let status = if v < min { Status::Warn } else { Status::Ok };
    Finding {
        name,
        status,
        current: v.to_string(),
        needed,
        fix: (status != Status::Ok).then(|| format!("sysctl -w {name}={min}")),
        why,
    }
}

fn port_range(n: u64, sys: &SystemLimits) -> Finding {
    let why = "a client on this host gets one ephemeral port per connection from each \
               source address, and only half the range is fast (connect takes ports of one \
               parity first; past that half, one connect in ten took a second, measured), so \
               N connections need ceil(N / (ports / 2)) addresses out of 127.0.0.1-254 \
               (`ringpush load` spreads over them). Keep the ports you serve outside the \
               range (or list them in net.ipv4.ip_local_reserved_ports)";
    let name = "net.ipv4.ip_local_port_range";
    let Some((lo, hi)) = sys.ip_local_port_range else {
        return unreadable(name, format!("<= {SOURCE_ADDRESSES} source addresses"), why);
    };
    let ports = if hi >= lo { hi - lo + 1 } else { 0 };
    let addrs = if ports < 2 {
        u64::MAX
    } else {
        n.div_ceil(ports / 2)
    };
    let status = if addrs > SOURCE_ADDRESSES {
        Status::Fail
    } else {
        Status::Ok
    };
    let current = format!("{lo} {hi} ({ports} ports per address)");
    let needed = if addrs == u64::MAX {
        "a non-empty range".to_owned()
    } else {
        format!("{addrs} of {SOURCE_ADDRESSES} source addresses")
    };
    let (flo, fhi) = PORT_RANGE_FIX;
    let fix_ports = fhi - flo + 1;
    let fix_helps = n.div_ceil(fix_ports / 2) <= SOURCE_ADDRESSES;
    Finding {
        name,
        status,
        current,
        needed,
        fix: (status != Status::Ok && fix_helps)
            .then(|| format!("sysctl -w {name}=\"{flo} {fhi}\"")),
        why,
    }
}

fn tcp_mem(n: u64, sys: &SystemLimits) -> Finding {
    let why = "TCP's memory limit for socket buffers, in pages (the ~9 KB of socket \
               structures per idle pair is not counted here; see MemAvailable). A socket \
               with any data queued is charged at least one page, so a broadcast to all N \
               (server send queue + client receive queue) needs 2N pages at once; past the \
               high mark the kernel drops segments and logs 'TCP: out of memory'. Idle \
               connections fit in any setting";
    let name = "net.ipv4.tcp_mem";
    let want = n.saturating_mul(2);
    let page = sys.page_size.max(1);
    let needed = format!(
        "high >= {want} pages ({}, a page per socket)",
        bytes(want.saturating_mul(page))
    );
    let Some([lo, pressure, high]) = sys.tcp_mem else {
        return unreadable(name, needed, why);
    };
    let status = if high < want {
        Status::Warn
    } else {
        Status::Ok
    };
    Finding {
        name,
        status,
        current: format!(
            "{lo} {pressure} {high} (high = {})",
            bytes(high.saturating_mul(page))
        ),
        needed,
        fix: (status != Status::Ok)
            .then(|| format!("sysctl -w {name}=\"{n} {} {want}\"", n / 2 * 3)),
        why,
    }
}

fn conntrack(n: u64, sys: &SystemLimits) -> Finding {
    let why = "when the conntrack module is loaded and a firewall rule uses it, every TCP \
               connection, loopback included, is one entry (both directions share it); a \
               full table drops new connections' packets ('nf_conntrack: table full'). \
               Closed connections stay tracked for 120 s (TIME_WAIT), so a reconnect storm \
               briefly needs 2N. A count of 0 suggests nothing is tracked; a NOTRACK rule for \
               the server's port avoids the cost entirely";
    let name = "net.netfilter.nf_conntrack_max";
    let want = n.saturating_mul(2);
    let needed = format!(">= {want} (2 x {n})");
    let Some(v) = sys.nf_conntrack_max else {
        return Finding {
            name,
            status: Status::Ok,
            current: "conntrack not loaded".into(),
            needed,
            fix: None,
            why,
        };
    };
    let idle = sys.nf_conntrack_count == Some(0);
    let mut status = if v < n {
        Status::Fail
    } else if v < want {
        Status::Warn
    } else {
        Status::Ok
    };
    if idle && status == Status::Fail {
        // Nothing tracked at all: most likely no rule asks for conntrack, so the table
        // will never fill. Still worth a warning in case a firewall is loaded later.
        status = Status::Warn;
    }
    let current = match sys.nf_conntrack_count {
        Some(0) => format!("{v} (0 tracked: likely inactive)"),
        Some(c) => format!("{v} ({c} tracked)"),
        None => v.to_string(),
    };
    Finding {
        name,
        status,
        current,
        needed,
        fix: (status != Status::Ok)
            .then(|| format!("sysctl -w {name}={}", want.next_power_of_two())),
        why,
    }
}

fn memory(n: u64, sys: &SystemLimits) -> Finding {
    let why = "16 KiB per connection with client and server on this host: ~9 KB of kernel \
               socket structures per pair (8.7 KB measured), up to 1 KiB of server user \
               space (389 B measured), about as much for the load generator, and a 4 KiB \
               buffer page while a message is in flight. Short of it, the OOM killer ends \
               the run";
    let want = n.saturating_mul(BYTES_PER_CONNECTION);
    let needed = format!("{} ({n} x 16 KiB)", bytes(want));
    let Some(kib) = sys.mem_available_kib else {
        return unreadable("MemAvailable", needed, why);
    };
    let have = kib.saturating_mul(1024);
    let status = if have < want {
        Status::Fail
    } else {
        Status::Ok
    };
    Finding {
        name: "MemAvailable",
        status,
        current: format!("{} (room for {})", bytes(have), have / BYTES_PER_CONNECTION),
        needed,
        fix: None,
        why,
    }
}

fn unreadable(name: &'static str, needed: String, why: &'static str) -> Finding {
    Finding {
        name,
        status: Status::Warn,
        current: "could not be read".into(),
        needed,
        fix: None,
        why,
    }
}

fn limit(v: u64) -> String {
    if v == u64::MAX {
        "unlimited".into()
    } else {
        v.to_string()
    }
}

/// `1.5 GiB`, `768.0 KiB`, `512 B`.
fn bytes(v: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if v < 1024 {
        return format!("{v} B");
    }
    let mut x = v as f64 / 1024.0;
    let mut unit = 0;
    while x >= 1024.0 && unit + 1 < UNITS.len() {
        x /= 1024.0;
        unit += 1;
    }
    format!("{x:.1} {}", UNITS[unit])
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::check::exit_code;

    pub(in crate::check) const N: u64 = 1_000_000;

    /// A machine tuned with tuning/99-ringpush.conf for a million connections: all ok.
    pub(in crate::check) fn tuned() -> SystemLimits {
        SystemLimits {
            nofile: Some((NOFILE_BEST, NOFILE_BEST)),
            memlock: Some(8 << 20),
            cap_ipc_lock: true,
            cpus: 2,
            file_max: Some(4_194_304),
            files_in_use: Some(1000),
            nr_open: Some(NOFILE_BEST),
            somaxconn: Some(4096),
            tcp_max_syn_backlog: Some(4096),
            netdev_max_backlog: Some(4096),
            ip_local_port_range: Some(PORT_RANGE_FIX),
            tcp_mem: Some([1_048_576, 1_572_864, 2_097_152]),
            page_size: 4096,
            mem_available_kib: Some(24 << 20),
            io_uring_disabled: Some(0),
            io_uring: Ok(()),
            nf_conntrack_max: Some(2_097_152),
            nf_conntrack_count: Some(10),
        }
    }

    fn find(n: u64, sys: &SystemLimits, name: &str) -> Finding {
        evaluate(n, sys)
            .into_iter()
            .find(|f| f.name == name)
            .unwrap_or_else(|| panic!("no finding named {name}"))
    }

    fn status(n: u64, sys: &SystemLimits, name: &str) -> Status {
        find(n, sys, name).status
    }

    #[test]
    fn tuned_machine_is_all_ok() {
        let findings = evaluate(N, &tuned());
        for f in &findings {
            assert_eq!(f.status, Status::Ok, "{f:?}");
            assert_eq!(f.fix, None, "{f:?}");
        }
        assert_eq!(exit_code(&findings), 0);
        assert_eq!(findings.len(), 13);
    }

    #[test]
    fn io_uring_probe_failure_is_fail_with_the_sysctl_fix_when_disabled() {
        let mut sys = tuned();
        sys.io_uring = Err("io_uring is disabled".into());
        assert_eq!(status(N, &sys, "io_uring"), Status::Fail);
        // Disabled by seccomp, not the sysctl: no sysctl to suggest.
        assert_eq!(find(N, &sys, "io_uring").fix, None);
        sys.io_uring_disabled = Some(2);
        assert_eq!(
            find(N, &sys, "io_uring").fix.as_deref(),
            Some("sysctl -w kernel.io_uring_disabled=0")
        );
    }

    #[test]
    fn io_uring_disabled_levels() {
        let mut sys = tuned();
        for (v, want) in [
            (None, Status::Ok),
            (Some(0), Status::Ok),
            (Some(1), Status::Warn),
            (Some(2), Status::Fail),
        ] {
            sys.io_uring_disabled = v;
            let f = find(N, &sys, "kernel.io_uring_disabled");
            assert_eq!(f.status, want, "{v:?}");
            assert_eq!(
                f.fix.is_some(),
                want != Status::Ok,
                "fix only when needed: {f:?}"
            );
        }
    }

    #[test]
    fn nofile_boundaries_use_the_hard_limit() {
        let mut sys = tuned();
        let r = u64::from(RESERVE);
        for (hard, want) in [
            (r, Status::Fail),
            (r + 1, Status::Warn),
            (NOFILE_WARN - 1, Status::Warn),
            (NOFILE_WARN, Status::Ok),
            (u64::MAX, Status::Ok),
        ] {
            // The soft limit does not matter: the server raises it to the hard one.
            sys.nofile = Some((1024, hard));
            assert_eq!(status(N, &sys, "RLIMIT_NOFILE"), want, "hard {hard}");
        }
        sys.nofile = Some((1024, 20_000));
        let f = find(N, &sys, "RLIMIT_NOFILE");
        // Two shards of 500,000: 500,000 / (20,000 - 64) = 25.1 -> 26 tables each.
        assert_eq!(
            f.current,
            "soft 1024, hard 20000 (52 tables of 20000 slots)"
        );
        sys.nofile = Some((1024, 1000));
        sys.nr_open = Some(524_288);
        let f = find(N, &sys, "RLIMIT_NOFILE");
        assert_eq!(
            f.fix.as_deref(),
            Some("ulimit -n 524288"),
            "capped at nr_open"
        );
    }

    #[test]
    fn memlock_boundaries() {
        let mut sys = tuned();
        sys.cap_ipc_lock = false;
        sys.nofile = Some((20_000, 20_000));
        // 20,000 slots: CQ 65,536 entries; first ring 2 x (4096 x 64 + 65536 x 16).
        let first = 2 * (4096 * 64 + 65_536 * 16);
        assert_eq!(ring_locked_bytes(20_000, 4096), first);
        let extra = 2 * (1024 * 64 + 65_536 * 16);
        // 52 tables (see the RLIMIT_NOFILE test): 2 first rings (one per CPU) + 50 extra.
        let total = 2 * first + 50 * extra;
        for (v, want) in [
            (first - 1, Status::Fail),
            (first, Status::Warn),
            (total - 1, Status::Warn),
            (total, Status::Ok),
            (u64::MAX, Status::Ok),
        ] {
            sys.memlock = Some(v);
            assert_eq!(status(N, &sys, "RLIMIT_MEMLOCK"), want, "memlock {v}");
        }
        sys.memlock = Some(0);
        sys.cap_ipc_lock = true;
        assert_eq!(status(N, &sys, "RLIMIT_MEMLOCK"), Status::Ok);
        sys.cap_ipc_lock = false;
        assert_eq!(
            find(N, &sys, "RLIMIT_MEMLOCK").fix.as_deref(),
            Some("ulimit -l unlimited")
        );
    }

    #[test]
    fn nr_open_boundary() {
        let mut sys = tuned();
        sys.nr_open = Some(NOFILE_WARN - 1);
        assert_eq!(status(N, &sys, "fs.nr_open"), Status::Warn);
        sys.nr_open = Some(NOFILE_WARN);
        assert_eq!(status(N, &sys, "fs.nr_open"), Status::Ok);
    }

    #[test]
    fn file_max_counts_both_ends_and_the_rest_of_the_system() {
        let mut sys = tuned();
        sys.files_in_use = Some(1000);
        for (v, want) in [
            (2 * N - 1, Status::Fail),
            (2 * N, Status::Warn),
            (2 * N + 999, Status::Warn),
            (2 * N + 1000, Status::Ok),
        ] {
            sys.file_max = Some(v);
            assert_eq!(status(N, &sys, "fs.file-max"), want, "file-max {v}");
        }
        sys.file_max = Some(1000);
        assert_eq!(
            find(N, &sys, "fs.file-max").fix.as_deref(),
            // 2,001,000 rounded up to a power of two.
            Some("sysctl -w fs.file-max=2097152")
        );
    }

    #[test]
    fn backlog_sysctls_need_one_listen_queue() {
        for name in [
            "net.core.somaxconn",
            "net.ipv4.tcp_max_syn_backlog",
            "net.core.netdev_max_backlog",
        ] {
            let mut sys = tuned();
            let set = |sys: &mut SystemLimits, v| match name {
                "net.core.somaxconn" => sys.somaxconn = v,
                "net.ipv4.tcp_max_syn_backlog" => sys.tcp_max_syn_backlog = v,
                _ => sys.netdev_max_backlog = v,
            };
            set(&mut sys, Some(4095));
            let f = find(N, &sys, name);
            assert_eq!(f.status, Status::Warn, "{name}");
            assert_eq!(f.fix, Some(format!("sysctl -w {name}=4096")));
            set(&mut sys, Some(4096));
            assert_eq!(status(N, &sys, name), Status::Ok, "{name}");
            set(&mut sys, None);
            assert_eq!(status(N, &sys, name), Status::Warn, "{name} unreadable");
        }
    }

    #[test]
    fn port_range_fails_only_beyond_254_source_addresses() {
        let mut sys = tuned();
        let name = "net.ipv4.ip_local_port_range";
        // The default range: 28,232 ports, 14,116 fast ones, 71 addresses for a million.
        sys.ip_local_port_range = Some((32768, 60999));
        let f = find(N, &sys, name);
        assert_eq!(f.status, Status::Ok);
        assert_eq!(f.needed, "71 of 254 source addresses");
        // 1000 ports, 500 fast: 127,000 connections fit exactly in 254 addresses, one
        // more does not.
        sys.ip_local_port_range = Some((2000, 2999));
        assert_eq!(status(127_000, &sys, name), Status::Ok);
        let f = find(127_001, &sys, name);
        assert_eq!(f.status, Status::Fail);
        assert_eq!(
            f.fix.as_deref(),
            Some("sysctl -w net.ipv4.ip_local_port_range=\"10000 65535\"")
        );
        // Beyond what any range can give: fail without a fix.
        assert_eq!(find(20_000_000, &sys, name).fix, None);
        sys.ip_local_port_range = Some((3000, 2000));
        assert_eq!(status(1, &sys, name), Status::Fail);
    }

    #[test]
    fn tcp_mem_high_needs_a_page_per_socket() {
        let mut sys = tuned();
        let name = "net.ipv4.tcp_mem";
        sys.tcp_mem = Some([1, 2, 2 * N - 1]);
        let f = find(N, &sys, name);
        assert_eq!(f.status, Status::Warn);
        assert_eq!(
            f.fix.as_deref(),
            Some("sysctl -w net.ipv4.tcp_mem=\"1000000 1500000 2000000\"")
        );
        sys.tcp_mem = Some([1, 2, 2 * N]);
        assert_eq!(status(N, &sys, name), Status::Ok);
    }

    #[test]
    fn conntrack_boundaries() {
        let mut sys = tuned();
        let name = "net.netfilter.nf_conntrack_max";
        sys.nf_conntrack_count = Some(5);
        for (v, want) in [
            (Some(N - 1), Status::Fail),
            (Some(N), Status::Warn),
            (Some(2 * N - 1), Status::Warn),
            (Some(2 * N), Status::Ok),
            (None, Status::Ok),
        ] {
            sys.nf_conntrack_max = v;
            assert_eq!(status(N, &sys, name), want, "{v:?}");
        }
        // Nothing tracked: probably no rule uses conntrack, so a small table only warns.
        sys.nf_conntrack_max = Some(1000);
        sys.nf_conntrack_count = Some(0);
        let f = find(N, &sys, name);
        assert_eq!(f.status, Status::Warn);
        assert_eq!(
            f.fix.as_deref(),
            Some("sysctl -w net.netfilter.nf_conntrack_max=2097152")
        );
    }

    #[test]
    fn memory_needs_16_kib_per_connection() {
        let mut sys = tuned();
        let kib = N * 16;
        sys.mem_available_kib = Some(kib - 1);
        assert_eq!(status(N, &sys, "MemAvailable"), Status::Fail);
        sys.mem_available_kib = Some(kib);
        assert_eq!(status(N, &sys, "MemAvailable"), Status::Ok);
    }

    #[test]
    fn exit_code_is_the_worst_status() {
        let mut sys = tuned();
        assert_eq!(exit_code(&evaluate(N, &sys)), 0);
        sys.somaxconn = Some(128);
        assert_eq!(exit_code(&evaluate(N, &sys)), 1);
        sys.mem_available_kib = Some(0);
        assert_eq!(exit_code(&evaluate(N, &sys)), 2);
        assert_eq!(exit_code(&[]), 0);
    }

    #[test]
    fn bytes_are_human() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(16 << 30), "16.0 GiB");
    }
}
