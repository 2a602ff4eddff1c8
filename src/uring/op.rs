//! Operations, built only here, so that submitting them is safe.
//!
//! An SQE may name memory the kernel reads or writes until the operation completes. The
//! rest of the program never builds raw SQEs: it builds an [`Sqe`] through the
//! constructors below, which name no memory (descriptors, fixed slots, the ring's own
//! provided buffers), or hands memory to the driver by value ([`SendBuf`], timeouts,
//! [`ConnectChain`]): the driver keeps it until the operation's completion and gives a
//! send's buffers back with it ([`Held`]). Freeing memory while the kernel still uses it
//! is then impossible outside `src/uring`, whatever the caller does with its connections.
//!
//! Descriptors and fixed slots are not memory: naming a wrong one fails the operation
//! (`EBADF`), it cannot corrupt anything.

use std::net::SocketAddrV4;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::time::Duration;

use io_uring::{opcode, squeue, types};

use super::net::sockaddr;
use super::token::{HELD_BIT, SENTINEL_BASE};

/// An operation naming no memory, ready to be pushed with
/// [`super::table::Tables::push`].
#[derive(Debug, Clone)]
pub struct Sqe(pub(super) squeue::Entry);

impl Sqe {
    /// Sets the value its completion carries back.
    ///
    /// # Panics
    /// On a value with the top bit set that is not a sentinel: the driver reserves
    /// those for the operations whose memory it holds.
    pub fn user_data(self, user_data: u64) -> Sqe {
        assert!(
            user_data & HELD_BIT == 0 || user_data >= SENTINEL_BASE,
            "user_data {user_data:#x} uses the driver's reserved bit"
        );
        Sqe(self.0.user_data(user_data))
    }
}

/// Multishot accept on a listener, each connection into a free slot of the ring's table.
pub fn accept_multi(listener: RawFd) -> Sqe {
    Sqe(opcode::AcceptMulti::new(types::Fd(listener))
        .allocate_file_index(true)
        .build())
}

/// One accept on a listener into a free slot of the ring's table.
pub fn accept(listener: RawFd) -> Sqe {
    Sqe(opcode::Accept::new(
        types::Fd(listener),
        std::ptr::null_mut(),
        std::ptr::null_mut(),
    )
    .file_index(Some(types::DestinationSlot::auto_target()))
    .build())
}

/// Installs a fixed slot's file as a plain descriptor (close-on-exec), returned as the
/// completion's result (Linux 6.8+): how a socket accepted as a direct descriptor gets
/// its peer's address, with [`super::net::take_peer_addr`].
pub fn install_fd(slot: u32) -> Sqe {
    Sqe(opcode::FixedFdInstall::new(types::Fixed(slot), 0).build())
}

/// Cancels the operation submitted with `user_data`.
pub fn cancel(user_data: u64) -> Sqe {
    Sqe(opcode::AsyncCancel::new(user_data).build())
}

/// Cancels every operation on a (plain) descriptor.
pub fn cancel_fd(fd: RawFd) -> Sqe {
    Sqe(opcode::AsyncCancel2::new(types::CancelBuilder::fd(types::Fd(fd)).all()).build())
}

/// Polls a descriptor for input; `multi`: until cancelled.
pub fn poll_in(fd: RawFd, multi: bool) -> Sqe {
    Sqe(opcode::PollAdd::new(types::Fd(fd), libc::POLLIN as u32)
        .multi(multi)
        .build())
}

/// Multishot receive on a fixed slot into the ring's provided buffers (group `bgid`),
/// ending by itself after `limit` bytes (0: no limit).
///
/// The limit is the kernel's `IORING_RECV_MSHOT_LIM` (Linux 6.16+: the SQE's `optlen`
/// field). It is what bounds the input a connection can hand us after we decide to stop
/// reading from it: a cancel takes effect only at the next submit, and by then one
/// wake-up may have filled buffer after buffer from a full socket (half a MiB per
/// connection was seen with 4 KiB buffers). Older kernels ignore the field; the
/// receive then runs until cancelled.
pub fn recv_multi(slot: u32, bgid: u16, limit: u32) -> Sqe {
    Sqe(with_optlen(
        opcode::RecvMulti::new(types::Fixed(slot), bgid).build(),
        limit,
    ))
}

/// Sets the SQE's `optlen`, which the io-uring crate's builders do not expose for
/// receives: the `u32` at byte 44 of the kernel's 64-byte `io_uring_sqe`
/// (`include/uapi/linux/io_uring.h`, the union with `file_index`, unused by a receive on
/// a fixed slot).
fn with_optlen(entry: squeue::Entry, optlen: u32) -> squeue::Entry {
    const _: () = assert!(std::mem::size_of::<squeue::Entry>() == 64);
    // SAFETY: `squeue::Entry` is `#[repr(C)]` around the plain-data `io_uring_sqe`
    // (64 bytes, asserted above): it and `[u8; 64]` have the same size and any bits are
    // valid for both; nothing is dropped or aliased.
    let mut raw: [u8; 64] = unsafe { std::mem::transmute(entry) };
    raw[44..48].copy_from_slice(&optlen.to_ne_bytes());
    // SAFETY: as above, back; the bytes are a valid SQE with one more field set.
    unsafe { std::mem::transmute::<[u8; 64], squeue::Entry>(raw) }
}

/// `shutdown(2)` of a fixed slot's socket.
pub fn shutdown(slot: u32, how: i32) -> Sqe {
    Sqe(opcode::Shutdown::new(types::Fixed(slot), how).build())
}

/// Closes a fixed slot.
pub fn close(slot: u32) -> Sqe {
    Sqe(opcode::Close::new(types::Fixed(slot)).build())
}

/// Posts a completion carrying `data` on the ring whose descriptor is `ring_fd`.
pub fn msg_ring(ring_fd: RawFd, data: u64) -> Sqe {
    Sqe(opcode::MsgRingData::new(types::Fd(ring_fd), 0, data, None).build())
}

/// Bytes queued for a socket: owned by one connection, or shared by many (a published
/// message, encoded once). The heap bytes never move, whoever holds the chunk.
#[derive(Debug, Clone)]
pub enum Chunk {
    /// Owned by one connection (protocol replies, echo frames).
    Owned(Vec<u8>),
    /// Shared by every subscriber of a published message on this shard.
    Shared(Rc<[u8]>),
}

impl Chunk {
    /// The bytes.
    pub fn bytes(&self) -> &[u8] {
        match self {
            Chunk::Owned(v) => v,
            Chunk::Shared(r) => r,
        }
    }
}

/// Chunks to send, the first `offset` bytes of the first already sent. Given to
/// [`super::table::Tables::send`] and returned with the completion.
#[derive(Debug)]
pub struct SendBuf {
    /// The chunks, in order.
    pub chunks: Vec<Chunk>,
    /// Bytes of `chunks[0]` sent before.
    pub offset: usize,
    /// The iovecs the kernel reads (several chunks), built by the driver.
    pub(super) iov: Box<[libc::iovec]>,
    /// The message header naming `iov` (several chunks): boxed, so its address holds
    /// while the driver keeps the `SendBuf` in a growing slab.
    pub(super) hdr: Option<Box<libc::msghdr>>,
}

impl SendBuf {
    /// The chunks from `offset` into the first one.
    pub fn new(chunks: Vec<Chunk>, offset: usize) -> SendBuf {
        debug_assert!(chunks.first().is_none_or(|c| offset <= c.bytes().len()));
        SendBuf {
            chunks,
            offset,
            iov: Box::default(),
            hdr: None,
        }
    }

    /// Bytes to send.
    pub fn len(&self) -> usize {
        self.chunks.iter().map(|c| c.bytes().len()).sum::<usize>() - self.offset
    }

    /// Nothing to send?
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A send of these bytes on a fixed slot: `send` for one chunk, `sendmsg` for several.
    /// The entry points into `self`, which the driver keeps until the completion.
    /// (Not `writev`: on a socket it takes io_uring's file-write path, whose per-request
    /// setup and write notification cost 7 % of the server's CPU in a broadcast.)
    pub(super) fn entry(&mut self, slot: u32) -> squeue::Entry {
        if let [one] = &self.chunks[..] {
            let b = &one.bytes()[self.offset..];
            return opcode::Send::new(types::Fixed(slot), b.as_ptr(), b.len() as u32)
                .flags(libc::MSG_NOSIGNAL)
                .build();
        }
        self.iov = self
            .chunks
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let b = if i == 0 {
                    &c.bytes()[self.offset..]
                } else {
                    c.bytes()
                };
                libc::iovec {
                    iov_base: b.as_ptr() as *mut libc::c_void,
                    iov_len: b.len(),
                }
            })
            .collect();
        // SAFETY: all-zero is a valid msghdr (no name, no control data).
        let mut hdr: Box<libc::msghdr> = Box::new(unsafe { std::mem::zeroed() });
        hdr.msg_iov = self.iov.as_mut_ptr();
        hdr.msg_iovlen = self.iov.len() as _;
        let entry = opcode::SendMsg::new(types::Fixed(slot), &*hdr)
            .flags(libc::MSG_NOSIGNAL as u32)
            .build();
        self.hdr = Some(hdr);
        entry
    }
}

/// A client connection: create a socket in a fixed slot, optionally bind it to a source
/// address (with `IP_BIND_ADDRESS_NO_PORT`, so the port is picked per destination at
/// connect time), and connect it: one `IO_LINK` chain.
#[derive(Debug, Clone, Copy)]
pub struct ConnectChain {
    /// The fixed slot the socket goes into.
    pub slot: u32,
    /// Source address (port 0), if any.
    pub source: Option<SocketAddrV4>,
    /// Destination.
    pub dest: SocketAddrV4,
    /// `user_data` of the socket, setsockopt, bind and connect completions.
    pub socket_data: u64,
    /// See `socket_data`.
    pub sockopt_data: u64,
    /// See `socket_data`.
    pub bind_data: u64,
    /// See `socket_data`.
    pub connect_data: u64,
}

/// The memory a connect chain names.
#[derive(Debug)]
pub struct ConnectMem {
    src: (libc::sockaddr_storage, libc::socklen_t),
    dst: (libc::sockaddr_storage, libc::socklen_t),
    one: libc::c_int,
}

impl ConnectChain {
    /// The entries and the memory they name (boxed: its address is what they hold).
    pub(super) fn entries(&self) -> (Vec<squeue::Entry>, Box<ConnectMem>) {
        let unspecified = SocketAddrV4::new(0.into(), 0);
        let mem = Box::new(ConnectMem {
            src: sockaddr(self.source.unwrap_or(unspecified).into()),
            dst: sockaddr(self.dest.into()),
            one: 1,
        });
        let mut chain = Vec::with_capacity(4);
        chain.push(
            opcode::Socket::new(libc::AF_INET, libc::SOCK_STREAM, 0)
                .file_index(types::DestinationSlot::try_from_slot_target(self.slot).ok())
                .build()
                .flags(squeue::Flags::IO_LINK)
                .user_data(self.socket_data),
        );
        if self.source.is_some() {
            chain.push(
                opcode::SetSockOpt::new(
                    types::Fixed(self.slot),
                    libc::IPPROTO_IP as u32,
                    libc::IP_BIND_ADDRESS_NO_PORT as u32,
                    (&raw const mem.one).cast(),
                    std::mem::size_of::<libc::c_int>() as u32,
                )
                .build()
                .flags(squeue::Flags::IO_LINK)
                .user_data(self.sockopt_data),
            );
            chain.push(
                opcode::Bind::new(
                    types::Fixed(self.slot),
                    (&raw const mem.src.0).cast(),
                    mem.src.1,
                )
                .build()
                .flags(squeue::Flags::IO_LINK)
                .user_data(self.bind_data),
            );
        }
        chain.push(
            opcode::Connect::new(
                types::Fixed(self.slot),
                (&raw const mem.dst.0).cast(),
                mem.dst.1,
            )
            .build()
            .user_data(self.connect_data),
        );
        (chain, mem)
    }
}

/// An abortive close of a fixed slot: `SO_LINGER` {on, 0 s}, then close, one
/// `IO_HARDLINK` chain (the close runs even if the option fails). The kernel then sends
/// a reset instead of a FIN and frees the socket at once, with no FIN/ACK exchange and no
/// `LAST_ACK` state. For a connection whose peer has already gone (EOF), that halves the
/// kernel's work of a close on loopback, where the closer also pays for the peer's side
/// of the exchange: what made a mass disconnect of 200,000 take 7 s.
///
/// # Warning
/// Unsent bytes in the kernel's send buffer are discarded: only for a peer that will not
/// read them.
#[derive(Debug, Clone, Copy)]
pub struct ResetClose {
    /// The fixed slot.
    pub slot: u32,
    /// `user_data` of the `setsockopt` completion.
    pub sockopt_data: u64,
    /// `user_data` of the close completion.
    pub close_data: u64,
}

/// The memory a reset close names.
#[derive(Debug)]
pub struct ResetMem {
    linger: libc::linger,
}

impl ResetClose {
    /// The entries and the memory they name (boxed: its address is what they hold).
    pub(super) fn entries(&self) -> (Vec<squeue::Entry>, Box<ResetMem>) {
        let mem = Box::new(ResetMem {
            linger: libc::linger {
                l_onoff: 1,
                l_linger: 0,
            },
        });
        let chain = vec![
            opcode::SetSockOpt::new(
                types::Fixed(self.slot),
                libc::SOL_SOCKET as u32,
                libc::SO_LINGER as u32,
                (&raw const mem.linger).cast(),
                std::mem::size_of::<libc::linger>() as u32,
            )
            .build()
            .flags(squeue::Flags::IO_HARDLINK)
            .user_data(self.sockopt_data),
            opcode::Close::new(types::Fixed(self.slot))
                .build()
                .user_data(self.close_data),
        ];
        (chain, mem)
    }
}

/// Memory the driver held for an operation, handed back with its completion.
#[derive(Debug)]
pub enum Held {
    /// A send's buffers: the caller learns from the result how much of them went out.
    Send(SendBuf),
    /// Memory the caller has no use for (a timeout's timespec, a connect chain's
    /// addresses); dropped with the completion.
    Other(OtherMem),
}

/// See [`Held::Other`].
#[derive(Debug)]
pub enum OtherMem {
    /// A timeout's duration.
    Timespec(Box<types::Timespec>),
    /// A connect chain's addresses and option value.
    Connect(Box<ConnectMem>),
    /// A reset close's `linger` value.
    Reset(Box<ResetMem>),
}

/// A relative timeout after `after`.
pub(super) fn timeout(after: Duration) -> (squeue::Entry, Box<types::Timespec>) {
    let ts = Box::new(
        types::Timespec::new()
            .sec(after.as_secs())
            .nsec(after.subsec_nanos()),
    );
    let e = opcode::Timeout::new(&*ts).build();
    (e, ts)
}
