//! Socket setup that std does not offer: SO_REUSEPORT listeners, and the probe that
//! keeps them from joining another process's port.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::sys::cvt;

/// A `sockaddr_storage` holding `addr`, and its length.
pub fn sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain old data; all-zero is a valid (unspecified) value.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and suitably aligned for sockaddr_in.
            unsafe { std::ptr::write((&raw mut storage).cast::<libc::sockaddr_in>(), sin) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: as above, for sockaddr_in6.
            unsafe { std::ptr::write((&raw mut storage).cast::<libc::sockaddr_in6>(), sin6) };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

/// A listening TCP socket with SO_REUSEPORT, so each shard binds its own listener on the
/// same address and the kernel spreads incoming connections over them. `TCP_NODELAY`
/// is set on it, so accepted connections inherit it: the shard already gathers a loop
/// turn's bytes into one send per connection, and Nagle's algorithm would only hold a
/// small event back until the peer's (possibly delayed) ACK.
///
/// # Warning
/// SO_REUSEPORT also lets a second process of the same user bind the port and silently
/// take part of the connections; call [`probe_exclusive`] first.
pub fn reuseport_listener(addr: SocketAddr, backlog: i32) -> io::Result<OwnedFd> {
    let fd = bound_socket(addr, &[libc::SO_REUSEADDR, libc::SO_REUSEPORT])?;
    let one: libc::c_int = 1;
    // SAFETY: setsockopt on a socket we own with a c_int value alive for the call.
    cvt(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            (&raw const one).cast(),
            size_of_val(&one) as libc::socklen_t,
        )
    })?;
    // SAFETY: listen on a bound socket we own.
    cvt(unsafe { libc::listen(fd.as_raw_fd(), backlog) })?;
    Ok(fd)
}

/// Is `addr` free for a listener of our own? Binds (without listening) and closes a
/// socket *without* SO_REUSEPORT, which fails with `EADDRINUSE` when any socket listens
/// on the port, SO_REUSEPORT listeners of another ringpush included. SO_REUSEADDR is
/// set as on the real listeners, so connections of a previous run still in TIME_WAIT
/// do not count as "in use".
///
/// Port 0 always succeeds (the kernel picks a free port); the probe then proves nothing.
pub fn probe_exclusive(addr: SocketAddr) -> io::Result<()> {
    bound_socket(addr, &[libc::SO_REUSEADDR]).map(drop)
}

/// A TCP socket with the given `SOL_SOCKET` options set to 1, bound to `addr`.
fn bound_socket(addr: SocketAddr, options: &[libc::c_int]) -> io::Result<OwnedFd> {
    let domain = if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: socket() has no memory preconditions; the result is checked.
    let fd = cvt(unsafe { libc::socket(domain, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: fd is a fresh socket we own; OwnedFd closes it on every error path below.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let one: libc::c_int = 1;
    let (value, value_len) = (
        (&raw const one).cast(),
        size_of_val(&one) as libc::socklen_t,
    );
    for &opt in options {
        // SAFETY: `value` points to a c_int of `value_len` bytes, alive for the call.
        cvt(unsafe { libc::setsockopt(fd, libc::SOL_SOCKET, opt, value, value_len) })?;
    }
    let (storage, len) = sockaddr(addr);
    // SAFETY: storage holds a sockaddr of `len` bytes for this family.
    cvt(unsafe { libc::bind(fd, (&raw const storage).cast(), len) })?;
    Ok(owned)
}

/// The local address a socket is bound to (to learn the port after binding port 0).
pub fn local_addr(fd: &OwnedFd) -> io::Result<SocketAddr> {
    // SAFETY: zeroed sockaddr_storage is valid; getsockname writes at most `len` bytes.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: as above.
    cvt(unsafe { libc::getsockname(fd.as_raw_fd(), (&raw mut storage).cast(), &mut len) })?;
    socket_addr(&storage)
}

/// The peer's address of the descriptor a [`super::op::install_fd`] completion
/// returned (`fd`, its result), which this takes over and closes. The direct
/// descriptor still holds the socket, so closing the copy ends nothing. Two system
/// calls that do not block (`getpeername`, `close`).
pub fn take_peer_addr(fd: i32) -> io::Result<SocketAddr> {
    if fd < 0 {
        return Err(io::Error::from_raw_os_error(-fd));
    }
    // SAFETY: a successful FIXED_FD_INSTALL returns a new descriptor that nothing else
    // owns; the OwnedFd closes it once, when this function returns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: zeroed sockaddr_storage is valid; getpeername writes at most `len` bytes.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: as above.
    cvt(unsafe { libc::getpeername(fd.as_raw_fd(), (&raw mut storage).cast(), &mut len) })?;
    socket_addr(&storage)
}

/// The address in a `sockaddr_storage` the kernel filled.
fn socket_addr(storage: &libc::sockaddr_storage) -> io::Result<SocketAddr> {
    match i32::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the kernel wrote a sockaddr_in for AF_INET.
            let sin = unsafe { &*std::ptr::from_ref(storage).cast::<libc::sockaddr_in>() };
            Ok(SocketAddr::from((
                sin.sin_addr.s_addr.to_ne_bytes(),
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the kernel wrote a sockaddr_in6 for AF_INET6.
            let sin6 = unsafe { &*std::ptr::from_ref(storage).cast::<libc::sockaddr_in6>() };
            Ok(SocketAddr::from((
                sin6.sin6_addr.s6_addr,
                u16::from_be(sin6.sin6_port),
            )))
        }
        f => Err(io::Error::other(format!("unexpected address family {f}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn in_use(r: io::Result<()>) -> bool {
        r.is_err_and(|e| e.kind() == io::ErrorKind::AddrInUse)
    }

    #[test]
    fn probe_sees_any_listener_on_the_port() {
        // A plain listener of someone else (std sets SO_REUSEADDR only).
        let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = other.local_addr().unwrap();
        assert!(in_use(probe_exclusive(addr)));
        assert!(
            reuseport_listener(addr, 16).is_err(),
            "no sharing without SO_REUSEPORT on both"
        );
        drop(other);
        assert!(probe_exclusive(addr).is_ok(), "free again");

        // Our own SO_REUSEPORT listeners: another reuseport socket could join them, a
        // probe cannot.
        let ours = reuseport_listener(addr, 16).unwrap();
        assert!(in_use(probe_exclusive(addr)));
        let joined = reuseport_listener(addr, 16).expect("SO_REUSEPORT shares the port");
        assert_eq!(local_addr(&joined).unwrap(), addr);
        drop((ours, joined));
        assert!(probe_exclusive(addr).is_ok());

        // A wildcard listener on the port covers 127.0.0.1 too.
        let any = std::net::TcpListener::bind(("0.0.0.0", addr.port()));
        if let Ok(_any) = any {
            assert!(in_use(probe_exclusive(addr)), "0.0.0.0 covers 127.0.0.1");
        }
        assert!(probe_exclusive("127.0.0.1:0".parse().unwrap()).is_ok());
    }
}
