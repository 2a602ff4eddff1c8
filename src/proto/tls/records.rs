//! The TLS 1.3 record layer after the handshake (RFC 8446 §5), kept small.
//!
//! Once the handshake is done, rustls hands over the traffic secrets
//! (`dangerous_into_kernel_connection`, the kTLS entry point) and keeps only what it
//! needs to derive the next ones after a KeyUpdate. A connection then holds two keys,
//! two IVs and two sequence numbers (about 100 bytes) instead of rustls' connection
//! state and two AEAD contexts (about 2.3 KB, measured): the AEAD context is built for
//! each batch of records (one receive, one send), which costs one AES key schedule
//! against the work of the batch. With kernel TLS, these same secrets would go to
//! `setsockopt(SOL_TLS)` and this layer would go away.
//!
//! TLS 1.2 connections stay on rustls' record layer (see `Engine`).

use aws_lc_rs::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use rustls::client::ClientConnectionData;
use rustls::kernel::KernelConnection;
use rustls::server::ServerConnectionData;
use rustls::{ConnectionTrafficSecrets, ExtractedSecrets};

use super::{MAX_RECORD, TlsError};

/// TLS 1.3 content types (the inner type, after decryption; RFC 8446 §5.2).
const ALERT: u8 = 21;
const HANDSHAKE: u8 = 22;
const APPLICATION_DATA: u8 = 23;
/// Handshake message types after the handshake (RFC 8446 §4.6).
const NEW_SESSION_TICKET: u8 = 4;
const KEY_UPDATE: u8 = 24;
/// Alert descriptions (RFC 8446 §6).
const CLOSE_NOTIFY: u8 = 0;
const UNEXPECTED_MESSAGE: u8 = 10;
const BAD_RECORD_MAC: u8 = 20;
const RECORD_OVERFLOW: u8 = 22;
const DECODE_ERROR: u8 = 50;
/// The tag of every AEAD suite of TLS 1.3.
const TAG: usize = 16;
/// Our own records (KeyUpdates) that may wait unsent before a peer asking for more of
/// them is cut: its requests would otherwise grow our output without bound.
const MAX_PENDING_OUTPUT: usize = 16 * 1024;
/// Records one AES-GCM key may seal before it is replaced: RFC 8446 §5.5 allows
/// 2^24.5; a KeyUpdate goes well before.
const AES_GCM_LIMIT: u64 = 1 << 23;

/// One direction's key.
struct Direction {
    alg: &'static aead::Algorithm,
    key: [u8; 32],
    iv: [u8; aead::NONCE_LEN],
    seq: u64,
}

impl Direction {
    fn new((seq, secrets): (u64, ConnectionTrafficSecrets)) -> Result<Direction, TlsError> {
        let (alg, key, iv) = match &secrets {
            ConnectionTrafficSecrets::Aes128Gcm { key, iv } => (&aead::AES_128_GCM, key, iv),
            ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (&aead::AES_256_GCM, key, iv),
            ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => {
                (&aead::CHACHA20_POLY1305, key, iv)
            }
            _ => {
                return Err(TlsError(
                    "cipher suite without a compact record layer".into(),
                ));
            }
        };
        let mut d = Direction {
            alg,
            key: [0; 32],
            iv: [0; aead::NONCE_LEN],
            seq,
        };
        d.key[..key.as_ref().len()].copy_from_slice(key.as_ref());
        d.iv.copy_from_slice(iv.as_ref());
        Ok(d)
    }

    fn aead(&self) -> LessSafeKey {
        let key = &self.key[..self.alg.key_len()];
        LessSafeKey::new(UnboundKey::new(self.alg, key).expect("a key of the suite's length"))
    }

    /// The next record's nonce (RFC 8446 §5.3): the IV xor the sequence number.
    fn next_nonce(&mut self) -> Nonce {
        let mut n = self.iv;
        for (b, s) in n[4..].iter_mut().zip(self.seq.to_be_bytes()) {
            *b ^= s;
        }
        self.seq += 1;
        Nonce::assume_unique_for_key(n)
    }
}

impl Drop for Direction {
    fn drop(&mut self) {
        // Not left in freed memory (rustls zeroes its own copy the same way).
        self.key = [0; 32];
        self.iv = [0; aead::NONCE_LEN];
    }
}

/// What rustls keeps to derive the next secrets after a KeyUpdate.
enum Kernel {
    Server(KernelConnection<ServerConnectionData>),
    Client(KernelConnection<ClientConnectionData>),
}

impl Kernel {
    fn update_rx(&mut self) -> Result<(u64, ConnectionTrafficSecrets), TlsError> {
        Ok(match self {
            Kernel::Server(k) => k.update_rx_secret()?,
            Kernel::Client(k) => k.update_rx_secret()?,
        })
    }

    fn update_tx(&mut self) -> Result<(u64, ConnectionTrafficSecrets), TlsError> {
        Ok(match self {
            Kernel::Server(k) => k.update_tx_secret()?,
            Kernel::Client(k) => k.update_tx_secret()?,
        })
    }
}

/// A TLS 1.3 connection's record layer after the handshake.
pub(super) struct Records {
    tx: Direction,
    rx: Direction,
    kernel: Kernel,
    /// close_notify received: anything after it is ignored.
    peer_closed: bool,
}

impl Records {
    pub(super) fn server(
        (secrets, kernel): (ExtractedSecrets, KernelConnection<ServerConnectionData>),
    ) -> Result<Records, TlsError> {
        Records::new(secrets, Kernel::Server(kernel))
    }

    pub(super) fn client(
        (secrets, kernel): (ExtractedSecrets, KernelConnection<ClientConnectionData>),
    ) -> Result<Records, TlsError> {
        Records::new(secrets, Kernel::Client(kernel))
    }

    fn new(secrets: ExtractedSecrets, kernel: Kernel) -> Result<Records, TlsError> {
        Ok(Records {
            tx: Direction::new(secrets.tx)?,
            rx: Direction::new(secrets.rx)?,
            kernel,
            peer_closed: false,
        })
    }

    /// Opens the complete records at the front of `buf`: application data to `plain`,
    /// a KeyUpdate acted on (our own KeyUpdate, if asked for, sealed into `output`).
    /// Returns the bytes used (a cut record is left) and whether close_notify came.
    pub(super) fn open(
        &mut self,
        buf: &mut [u8],
        plain: &mut dyn FnMut(&[u8]),
        output: &mut Vec<u8>,
    ) -> Result<(usize, bool), TlsError> {
        let mut used = 0;
        let mut key = None;
        while !self.peer_closed {
            let rest = &mut buf[used..];
            if rest.len() < 5 {
                break;
            }
            let len = usize::from(u16::from_be_bytes([rest[3], rest[4]]));
            if rest[0] != APPLICATION_DATA {
                return Err(self.fail(
                    UNEXPECTED_MESSAGE,
                    "a record that is not encrypted",
                    output,
                ));
            }
            if len > MAX_RECORD + 256 {
                return Err(self.fail(RECORD_OVERFLOW, "a record over 2^14 + 256 bytes", output));
            }
            if rest.len() < 5 + len {
                break;
            }
            used += 5 + len;
            let (head, body) = rest[..5 + len].split_at_mut(5);
            let aead = key.get_or_insert_with(|| self.rx.aead());
            let nonce = self.rx.next_nonce();
            let Ok(opened) = aead.open_in_place(nonce, Aad::from(&head[..]), body) else {
                return Err(self.fail(BAD_RECORD_MAC, "a record that does not decrypt", output));
            };
            // The inner type is the last byte that is not padding.
            let Some(end) = opened.iter().rposition(|&b| b != 0) else {
                return Err(self.fail(UNEXPECTED_MESSAGE, "a record of padding only", output));
            };
            let (content, kind) = (&opened[..end], opened[end]);
            match kind {
                APPLICATION_DATA => plain(content),
                ALERT if content == [1, CLOSE_NOTIFY] => self.peer_closed = true,
                ALERT => {
                    let what = content.get(1).copied().unwrap_or(0);
                    return Err(TlsError(format!("the peer sent alert {what}")));
                }
                HANDSHAKE => {
                    let content = content.to_vec();
                    if self.handshake(&content, output)? {
                        // New receive key from the next record on.
                        key = None;
                    }
                }
                _ => return Err(self.fail(UNEXPECTED_MESSAGE, "an unknown record type", output)),
            }
        }
        Ok((used, self.peer_closed))
    }

    /// Post-handshake messages in one record; returns whether the receive key changed.
    fn handshake(&mut self, mut msgs: &[u8], output: &mut Vec<u8>) -> Result<bool, TlsError> {
        let mut rx_changed = false;
        while !msgs.is_empty() {
            if msgs.len() < 4 {
                return Err(self.fail(DECODE_ERROR, "a cut handshake message", output));
            }
            let len =
                (usize::from(msgs[1]) << 16) | (usize::from(msgs[2]) << 8) | usize::from(msgs[3]);
            let Some(body) = msgs.get(4..4 + len) else {
                return Err(self.fail(DECODE_ERROR, "a handshake message across records", output));
            };
            match (msgs[0], body, &mut self.kernel) {
                (KEY_UPDATE, &[request @ (0 | 1)], _) => {
                    self.rx = Direction::new(self.kernel.update_rx()?)?;
                    rx_changed = true;
                    if request == 1 {
                        if output.len() > MAX_PENDING_OUTPUT {
                            // Asking again and again without reading the answers: each
                            // would cost us an unsent record.
                            return Err(self.fail(UNEXPECTED_MESSAGE, "a KeyUpdate flood", output));
                        }
                        self.update_tx(output)?;
                    }
                }
                // A ticket for the client to resume with (kept in its config's store).
                (NEW_SESSION_TICKET, body, Kernel::Client(k)) => {
                    k.handle_new_session_ticket(body)?;
                }
                _ => {
                    return Err(self.fail(
                        UNEXPECTED_MESSAGE,
                        "an unexpected handshake message",
                        output,
                    ));
                }
            }
            msgs = &msgs[4 + len..];
        }
        Ok(rx_changed)
    }

    /// Sends a KeyUpdate (not asking for one back) under the current key, then switches.
    fn update_tx(&mut self, out: &mut Vec<u8>) -> Result<(), TlsError> {
        let aead = self.tx.aead();
        seal_record(
            &mut self.tx,
            &aead,
            HANDSHAKE,
            &[KEY_UPDATE, 0, 0, 1, 0],
            out,
        );
        self.tx = Direction::new(self.kernel.update_tx()?)?;
        Ok(())
    }

    /// Seals `data` (any length) as application data records appended to `out`.
    pub(super) fn seal(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), TlsError> {
        if std::ptr::eq(self.tx.alg, &aead::AES_128_GCM)
            || std::ptr::eq(self.tx.alg, &aead::AES_256_GCM)
        {
            let records = data.len().div_ceil(MAX_RECORD) as u64;
            if self.tx.seq + records >= AES_GCM_LIMIT {
                self.update_tx(out)?;
            }
        }
        let aead = self.tx.aead();
        for piece in data.chunks(MAX_RECORD) {
            seal_record(&mut self.tx, &aead, APPLICATION_DATA, piece, out);
        }
        Ok(())
    }

    /// Appends close_notify.
    pub(super) fn close_notify(&mut self, out: &mut Vec<u8>) {
        let aead = self.tx.aead();
        seal_record(&mut self.tx, &aead, ALERT, &[1, CLOSE_NOTIFY], out);
    }

    /// A fatal alert `desc` for the peer, and the error for us.
    fn fail(&mut self, desc: u8, why: &str, out: &mut Vec<u8>) -> TlsError {
        let aead = self.tx.aead();
        seal_record(&mut self.tx, &aead, ALERT, &[2, desc], out);
        TlsError(format!("TLS: {why}"))
    }
}

/// Appends one record of inner type `kind` holding `data` (at most 2^14 bytes).
fn seal_record(tx: &mut Direction, aead: &LessSafeKey, kind: u8, data: &[u8], out: &mut Vec<u8>) {
    let len = data.len() + 1 + TAG;
    let head = [APPLICATION_DATA, 3, 3, (len >> 8) as u8, len as u8];
    out.extend_from_slice(&head);
    let start = out.len();
    out.extend_from_slice(data);
    out.push(kind);
    let nonce = tx.next_nonce();
    let tag = aead
        .seal_in_place_separate_tag(nonce, Aad::from(head), &mut out[start..])
        .expect("a record within the AEAD's limits");
    out.extend_from_slice(tag.as_ref());
}
