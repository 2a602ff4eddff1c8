//! OS calls outside io_uring: eventfds, resource limits, the CPU affinity mask, `sysconf`
//! values, blocked signals, and ([`proc`]) every `/proc` reader.
//!
//! Kept apart from [`crate::uring`] because the rules differ. The driver hands the
//! kernel memory that must outlive a call (an SQE's buffers live until its completion),
//! so its `unsafe` is broad and rests on ownership. Everything here is an ordinary
//! synchronous call that borrows memory only for its own duration: each `unsafe` block is
//! one call with a `// SAFETY:` line, and [`cvt`] turns the `-1` of a failure into an
//! [`io::Error`] (as std's `sys::cvt` and mio's `syscall!` do) instead of a hand-rolled
//! check in each place.

#![allow(unsafe_code)]

pub mod proc;

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// A syscall return value whose `-1` (any negative value) means "failed, see errno".
pub trait SysRet: Copy {
    /// Whether the call failed.
    fn failed(self) -> bool;
}

macro_rules! sys_ret {
    ($($t:ty)*) => {$(
        impl SysRet for $t {
            fn failed(self) -> bool {
                self < 0
            }
        }
    )*};
}
sys_ret!(i32 i64 isize);

/// The errno helper: a negative return becomes [`io::Error::last_os_error`], any other
/// value is passed through. Call it right after the syscall, before anything can
/// overwrite `errno`.
pub fn cvt<T: SysRet>(rc: T) -> io::Result<T> {
    if rc.failed() {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// An `OwnedFd` from a descriptor returned by a successful syscall.
fn owned(fd: libc::c_int) -> OwnedFd {
    // SAFETY: `fd` was just returned by the kernel (checked by `cvt`) and nobody else
    // owns it; the OwnedFd closes it.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// An eventfd, used to tell every shard to shut down (each polls it).
pub fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: eventfd has no memory preconditions; the result is checked.
    cvt(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) }).map(owned)
}

/// A non-blocking eventfd, for wake-ups that are read back with [`eventfd_drain`].
pub fn eventfd_nonblocking() -> io::Result<OwnedFd> {
    // SAFETY: eventfd has no memory preconditions; the result is checked.
    cvt(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) }).map(owned)
}

/// Resets a non-blocking eventfd's counter (nothing happens if it is already zero).
pub fn eventfd_drain(fd: &OwnedFd) {
    let mut v: u64 = 0;
    // SAFETY: reads 8 bytes into a live u64 from an eventfd we own; EAGAIN is fine.
    unsafe { libc::read(fd.as_raw_fd(), (&raw mut v).cast(), 8) };
}

/// Makes an eventfd readable.
pub fn eventfd_signal(fd: &OwnedFd) -> io::Result<()> {
    let one: u64 = 1;
    // SAFETY: writes the 8 bytes of a live u64 to an eventfd we own. An eventfd write is
    // all 8 bytes or an error, never short.
    cvt(unsafe { libc::write(fd.as_raw_fd(), (&raw const one).cast(), 8) }).map(drop)
}

/// The resource argument of `getrlimit` (glibc declares its own enum type for it).
#[cfg(target_env = "gnu")]
pub type Resource = libc::__rlimit_resource_t;
/// The resource argument of `getrlimit`.
#[cfg(not(target_env = "gnu"))]
pub type Resource = libc::c_int;

fn getrlimit(resource: Resource) -> io::Result<libc::rlimit> {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes only the struct we pass, which outlives the call.
    cvt(unsafe { libc::getrlimit(resource, &mut rl) })?;
    Ok(rl)
}

/// Raises the soft RLIMIT_NOFILE to the hard limit and returns it: a registered file
/// table may hold at most this many slots. 1024 if the limit cannot be read.
pub fn raise_nofile_limit() -> u64 {
    let Ok(mut rl) = getrlimit(libc::RLIMIT_NOFILE) else {
        return 1024;
    };
    if rl.rlim_cur < rl.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: rl.rlim_max,
            rlim_max: rl.rlim_max,
        };
        // SAFETY: setrlimit reads the struct we pass; failure leaves the limit as it was.
        if cvt(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) }).is_ok() {
            rl.rlim_cur = rl.rlim_max;
        }
    }
    rl.rlim_cur
}

/// A resource limit as (soft, hard), `RLIM_INFINITY` as `u64::MAX`.
pub fn rlimit(resource: Resource) -> Option<(u64, u64)> {
    let rl = getrlimit(resource).ok()?;
    let conv = |v: libc::rlim_t| {
        if v == libc::RLIM_INFINITY {
            u64::MAX
        } else {
            v
        }
    };
    Some((conv(rl.rlim_cur), conv(rl.rlim_max)))
}

/// A positive `sysconf` value (`None` for -1: unsupported or no limit).
fn sysconf(name: libc::c_int) -> Option<u64> {
    // SAFETY: sysconf reads a constant of the running system; no memory is passed.
    let v = unsafe { libc::sysconf(name) };
    u64::try_from(v).ok().filter(|&v| v > 0)
}

/// The system page size (4096 when it cannot be read).
pub fn page_size() -> u64 {
    sysconf(libc::_SC_PAGESIZE).unwrap_or(4096)
}

/// `sysconf(_SC_CLK_TCK)`: the unit of CPU times in `/proc/PID/stat`.
pub fn clock_ticks_per_sec() -> Option<u64> {
    sysconf(libc::_SC_CLK_TCK)
}

/// The calling thread's CPU affinity mask (`None` if it cannot be read: more than
/// `CPU_SETSIZE`, 1024, CPUs).
fn affinity() -> Option<libc::cpu_set_t> {
    // SAFETY: cpu_set_t is a plain bit array, for which all zeroes is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let size = size_of::<libc::cpu_set_t>();
    // SAFETY: the kernel writes at most `size` bytes into `set`, which we own.
    cvt(unsafe { libc::sched_getaffinity(0, size, &mut set) }).ok()?;
    Some(set)
}

/// How many CPUs the process's affinity mask allows (`None` if it cannot be read).
pub fn affinity_cpu_count() -> Option<usize> {
    let set = affinity()?;
    // SAFETY: CPU_COUNT only reads the set, initialised by sched_getaffinity.
    let n = unsafe { libc::CPU_COUNT(&set) };
    usize::try_from(n).ok().filter(|&n| n > 0)
}

/// The CPUs this process may run on, in order (`[0]` if the mask cannot be read).
pub fn allowed_cpus() -> Vec<usize> {
    let Some(set) = affinity() else {
        return vec![0];
    };
    (0..libc::CPU_SETSIZE as usize)
        // SAFETY: CPU_ISSET reads one bit of an initialised set; c < CPU_SETSIZE.
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect()
}

/// Pins the calling thread to one CPU.
pub fn pin_to_cpu(cpu: usize) -> io::Result<()> {
    // SAFETY: cpu_set_t is a plain bitmask; zeroed is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: CPU_SET writes one bit inside the set; cpu is bounded by the caller's CPU list.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    let size = size_of::<libc::cpu_set_t>();
    // SAFETY: pid 0 is the calling thread; the set is valid for its size.
    cvt(unsafe { libc::sched_setaffinity(0, size, &set) }).map(drop)
}

/// Signals blocked in the calling thread (and every thread it spawns afterwards), to be
/// taken synchronously with [`Signals::wait`].
#[derive(Debug)]
pub struct Signals {
    set: libc::sigset_t,
}

impl Signals {
    /// Blocks `signals` in the calling thread.
    pub fn block(signals: &[libc::c_int]) -> io::Result<Signals> {
        // SAFETY: an all-zero sigset_t is then initialised by sigemptyset.
        let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: `set` is a valid sigset_t for these calls, which only read/write it.
        unsafe {
            libc::sigemptyset(&mut set);
            for &s in signals {
                libc::sigaddset(&mut set, s);
            }
        }
        // SAFETY: reads `set`; a null old-set pointer is allowed. pthread_sigmask returns
        // the error number itself rather than setting errno, hence no `cvt`.
        let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        Ok(Signals { set })
    }

    /// Waits for one of the signals and returns its number.
    pub fn wait(&self) -> libc::c_int {
        let mut sig: libc::c_int = 0;
        // SAFETY: sigwait reads the set and writes the signal number into `sig`.
        while unsafe { libc::sigwait(&self.set, &mut sig) } != 0 {}
        sig
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cvt_turns_a_negative_return_into_errno() {
        assert_eq!(cvt(3i32).unwrap(), 3);
        assert_eq!(cvt(0isize).unwrap(), 0);
        // SAFETY: closing a descriptor that cannot be open (-1) only sets errno (EBADF).
        let e = cvt(unsafe { libc::close(-1) }).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EBADF));
    }

    #[test]
    fn eventfd_signals_and_drains() {
        let fd = eventfd_nonblocking().unwrap();
        eventfd_drain(&fd); // empty: EAGAIN, ignored
        eventfd_signal(&fd).unwrap();
        eventfd_signal(&fd).unwrap();
        let mut v: u64 = 0;
        // SAFETY: reads 8 bytes into a live u64 from the eventfd above.
        let n = cvt(unsafe { libc::read(fd.as_raw_fd(), (&raw mut v).cast(), 8) }).unwrap();
        assert_eq!((n, v), (8, 2));
        eventfd_signal(&fd).unwrap();
        eventfd_drain(&fd);
        // SAFETY: as above.
        let e = cvt(unsafe { libc::read(fd.as_raw_fd(), (&raw mut v).cast(), 8) });
        assert_eq!(e.unwrap_err().kind(), io::ErrorKind::WouldBlock);
    }

    #[test]
    fn limits_and_cpus_are_read() {
        let (soft, hard) = rlimit(libc::RLIMIT_NOFILE).unwrap();
        assert!(soft <= hard);
        assert!(page_size() >= 4096);
        assert!(clock_ticks_per_sec().is_some());
        let cpus = allowed_cpus();
        assert_eq!(affinity_cpu_count(), Some(cpus.len()));
    }
}
