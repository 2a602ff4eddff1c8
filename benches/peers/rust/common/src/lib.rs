//! What every peer server shares: the command line the comparison drives them with,
//! the file-descriptor limit, the listening socket and the routes of the ringpush
//! contract (`/echo`, `/ws/{topic}`), so that the peers differ only in their WebSocket
//! library.

use std::net::SocketAddr;
use std::num::NonZeroUsize;

use clap::Parser;

// `PEER --listen 127.0.0.1:PORT --threads N` (a plain comment: a doc comment here would
// become the `--help` text of every binary that flattens these arguments).
#[derive(Debug, Clone, Parser)]
#[command(about = "A ringpush peer: WebSocket echo on /echo, topic fan-out on /ws/{topic}")]
pub struct ServerArgs {
    /// Address to bind.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Worker threads: the comparison gives every server the same cores and this many
    /// threads. Default: the CPUs this process may run on.
    #[arg(long, env = "PEER_THREADS")]
    pub threads: Option<NonZeroUsize>,
}

impl ServerArgs {
    /// Parses the process arguments; exits with usage (code 2) on a bad flag.
    pub fn from_cli() -> Self {
        Self::parse()
    }

    pub fn threads(&self) -> usize {
        self.threads.map_or_else(available_cpus, NonZeroUsize::get)
    }
}

/// CPUs in the affinity mask (what `taskset`/cgroups give the process), at least 1.
pub fn available_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, NonZeroUsize::get)
}

/// Listen backlog: the same 4096 as a ringpush shard (and this host's `somaxconn`), so a
/// 10,000/s connection ramp is not throttled by SYN drops in one server and not another.
pub const BACKLOG: u32 = 4096;

/// Raises the soft RLIMIT_NOFILE to the hard limit, as a production unit
/// (`LimitNOFILE=`) would: every connection of these servers is a process fd. Returns the
/// new soft limit. Beyond the hard limit (20,000 on the benchmark host) accept fails
/// with EMFILE; the servers then pause accepting briefly instead of spinning.
pub fn raise_nofile_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one `rlimit` into the valid, exclusively borrowed `lim`.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 0;
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit only reads the valid `raised`.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return raised.rlim_cur;
        }
    }
    lim.rlim_cur
}

/// The two WebSocket routes of the ringpush contract (README "Endpoints").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `GET /echo`: each message back to its sender.
    Echo,
    /// `GET /ws/{topic}`: each message to every other subscriber of the topic.
    Topic(String),
}

/// Why a request path has no WebSocket behind it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteError {
    /// Neither `/echo` nor `/ws/...`: 404.
    NotFound,
    /// `/ws/{topic}` with a topic name outside the rule below: 400, as ringpush answers.
    BadTopic,
}

impl RouteError {
    pub fn status(self) -> u16 {
        match self {
            RouteError::NotFound => 404,
            RouteError::BadTopic => 400,
        }
    }
}

impl Route {
    /// Routes a request path (the query string is ignored).
    pub fn from_path(path: &str) -> Result<Route, RouteError> {
        let path = path.split('?').next().unwrap_or(path);
        if path == "/echo" {
            return Ok(Route::Echo);
        }
        let topic = path.strip_prefix("/ws/").ok_or(RouteError::NotFound)?;
        if valid_topic(topic) {
            Ok(Route::Topic(topic.to_owned()))
        } else {
            Err(RouteError::BadTopic)
        }
    }
}

/// Topic names: 1 to 128 characters of `A-Z a-z 0-9 . _ - :` (ringpush's rule).
pub fn valid_topic(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-:".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(Route::from_path("/echo"), Ok(Route::Echo));
        assert_eq!(Route::from_path("/echo?x=1"), Ok(Route::Echo));
        assert_eq!(
            Route::from_path("/ws/bench"),
            Ok(Route::Topic("bench".into()))
        );
        assert_eq!(
            Route::from_path("/ws/user:b.c-d_e"),
            Ok(Route::Topic("user:b.c-d_e".into()))
        );
        assert_eq!(Route::from_path("/ws/"), Err(RouteError::BadTopic));
        assert_eq!(Route::from_path("/ws/a/b"), Err(RouteError::BadTopic));
        assert_eq!(Route::from_path("/other"), Err(RouteError::NotFound));
        assert!(!valid_topic(&"a".repeat(129)));
    }
}
