//! TLS for one connection, sans-IO: ciphertext in, plaintext out; plaintext in,
//! ciphertext out (rustls' unbuffered API).
//!
//! # Memory
//!
//! rustls' buffered connection keeps a receive buffer of at least 4 KiB for its whole
//! life once it has read anything: 4 GiB at a million connections. The unbuffered API
//! leaves the buffers to us, so a connection holds only what it must:
//!
//! - Received bytes are deciphered straight from the caller's buffer (the shard's
//!   scratch); only a record cut by a receive boundary is copied here (`Tls::partial`)
//!   and freed when its rest has arrived.
//! - Ciphertext goes into the caller's send buffer ([`Tls::seal`]); handshake flights
//!   and alerts wait in [`Tls::take_output`]'s buffer until the caller takes them.
//!
//! After a TLS 1.3 handshake rustls hands the record layer over to `records` (the
//! kTLS entry point, `dangerous_into_kernel_connection`): an idle connection then keeps
//! two keys, two IVs, two sequence numbers and what rustls needs for a KeyUpdate, about
//! 1 KB in all against 2.3 KB with rustls' connection and its two AEAD contexts
//! (measured with a counting allocator); the AEAD context is set up per batch of
//! records instead (about 0.3 us, one AES key schedule). TLS 1.2 stays on rustls.
//!
//! # What the caller does
//!
//! [`Tls::receive`] every received byte in order; send [`Tls::take_output`] whenever it
//! has something, ahead of application data sealed later; [`Tls::seal`] application
//! data once [`Tls::is_handshaking`] is false (plaintext queued before that waits in the
//! caller's queue). A [`TlsError`] ends the connection: its alert is in the output.
//!
//! Kernel TLS offload would give the same secrets to the socket
//! (`setsockopt(SOL_TLS)`) instead of `records`; this kernel is built without
//! `CONFIG_TLS`, so nothing here does that yet.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rustls::client::UnbufferedClientConnection;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncryptError, InsufficientSizeError, UnbufferedStatus,
};
use rustls::{ClientConfig, ServerConfig};

/// The most plaintext per TLS record (RFC 8446 §5.1).
const MAX_RECORD: usize = 16 * 1024;
/// Ciphertext beyond the plaintext per record, at most: header (5), explicit nonce (8,
/// TLS 1.2 AES-GCM), tag (16), inner content type (1, TLS 1.3).
const RECORD_OVERHEAD: usize = 5 + 8 + 16 + 1;

/// A fatal TLS error: the connection must end (after sending [`Tls::take_output`], which
/// holds the alert telling the peer why).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsError(pub String);

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<rustls::Error> for TlsError {
    fn from(e: rustls::Error) -> TlsError {
        TlsError(e.to_string())
    }
}

/// What a [`Tls::receive`] found besides application data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Received {
    /// The peer sent close_notify: no more data will come (an EOF for the layer above).
    pub peer_closed: bool,
}

mod records;

use self::records::Records;

enum Side {
    Server(UnbufferedServerConnection),
    Client(UnbufferedClientConnection),
}

/// Who does the record layer.
// `Tls` is boxed by its owner; boxing `Records` too would cost every connection a
// second allocation to save nothing.
#[allow(clippy::large_enum_variant)]
enum Engine {
    /// rustls: during the handshake, and for the life of a TLS 1.2 connection. Boxed:
    /// rustls' state is about a kilobyte and goes away after a TLS 1.3 handshake.
    Rustls(Box<Side>),
    /// TLS 1.3 after the handshake: the compact record layer (`records`).
    Records(Records),
    /// Between the two, or after a failure to move from one to the other.
    Gone,
}

/// One connection's TLS state. Boxed by its owner: rustls' state is about a kilobyte,
/// paid only by TLS connections.
pub struct Tls {
    engine: Engine,
    /// A record cut by a receive boundary, waiting for its rest; empty (no allocation)
    /// otherwise.
    partial: Vec<u8>,
    /// Handshake records and alerts for the peer, not yet taken.
    output: Vec<u8>,
    handshaking: bool,
    failed: bool,
    /// close_notify is in the output (or was sent).
    notified: bool,
    /// The handshake resumed an earlier session (a ticket), without certificates.
    resumed: bool,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field("partial", &self.partial.len())
            .field("output", &self.output.len())
            .field("handshaking", &self.handshaking)
            .field("failed", &self.failed)
            .finish()
    }
}

/// Runs `$body` with `$conn` bound to the rustls connection of either side: their
/// `process_tls_records` are two inherent methods with the same shape.
macro_rules! on_side {
    ($side:expr, $conn:ident => $body:expr) => {
        match $side {
            Side::Server($conn) => $body,
            Side::Client($conn) => $body,
        }
    };
}

impl Tls {
    /// The server side of a new connection.
    pub fn server(config: Arc<ServerConfig>) -> Result<Tls, TlsError> {
        let conn = UnbufferedServerConnection::new(config)?;
        Ok(Tls::new(Side::Server(conn)))
    }

    /// The client side of a new connection to `name`.
    pub fn client(config: Arc<ClientConfig>, name: ServerName<'static>) -> Result<Tls, TlsError> {
        let mut tls = Tls::new(Side::Client(UnbufferedClientConnection::new(config, name)?));
        // The client speaks first: its hello is ready now.
        tls.process(&mut [])?;
        Ok(tls)
    }

    fn new(side: Side) -> Tls {
        Tls {
            engine: Engine::Rustls(Box::new(side)),
            partial: Vec::new(),
            output: Vec::new(),
            handshaking: true,
            failed: false,
            notified: false,
            resumed: false,
        }
    }

    /// Still handshaking: application data must wait.
    pub fn is_handshaking(&self) -> bool {
        self.handshaking
    }

    /// The handshake resumed an earlier session (known once it is done).
    pub fn is_resumed(&self) -> bool {
        self.resumed
    }

    /// A fatal error happened: nothing more can be sealed or received.
    pub fn is_failed(&self) -> bool {
        self.failed
    }

    /// Handshaking and not failed: the peer's next bytes are needed whatever the layer
    /// above wants.
    pub fn wants_input(&self) -> bool {
        self.handshaking && !self.failed
    }

    /// Bytes held for a record cut by a receive boundary (for memory accounting).
    pub fn partial_len(&self) -> usize {
        self.partial.len()
    }

    /// Handshake records or alerts waiting to be sent?
    pub fn has_output(&self) -> bool {
        !self.output.is_empty()
    }

    /// Takes the handshake records and alerts to send, ahead of anything sealed later.
    pub fn take_output(&mut self) -> Option<Vec<u8>> {
        (!self.output.is_empty()).then(|| std::mem::take(&mut self.output))
    }

    /// Feeds received ciphertext; `plain` gets the application data in order. `scratch`
    /// is the caller's reusable buffer (records are deciphered in place there).
    pub fn receive(
        &mut self,
        data: &[u8],
        scratch: &mut Vec<u8>,
        mut plain: impl FnMut(&[u8]),
    ) -> Result<Received, TlsError> {
        if self.failed {
            return Err(TlsError("the connection failed earlier".into()));
        }
        let mut joined;
        let from_partial = !self.partial.is_empty();
        let buf: &mut Vec<u8> = if from_partial {
            joined = std::mem::take(&mut self.partial);
            joined.extend_from_slice(data);
            &mut joined
        } else {
            scratch.clear();
            scratch.extend_from_slice(data);
            scratch
        };
        let result = self.process_with(buf, &mut plain);
        let (used, peer_closed) = match result {
            Ok(r) => r,
            Err(e) => {
                self.partial = Vec::new();
                return Err(e);
            }
        };
        if used < buf.len() {
            if from_partial {
                buf.drain(..used);
                self.partial = std::mem::take(buf);
            } else {
                self.partial = buf[used..].to_vec();
            }
        }
        Ok(Received { peer_closed })
    }

    /// Seals application data into records appended to `out`. Small pieces share a
    /// record (`scratch` gathers them): a turn's frames for one connection cost one
    /// record and one AEAD call, not one each.
    pub fn seal<'a>(
        &mut self,
        pieces: impl IntoIterator<Item = &'a [u8]>,
        scratch: &mut Vec<u8>,
        out: &mut Vec<u8>,
    ) -> Result<(), TlsError> {
        debug_assert!(!self.handshaking, "sealing before the handshake completed");
        scratch.clear();
        for piece in pieces {
            if scratch.len() + piece.len() <= MAX_RECORD {
                scratch.extend_from_slice(piece);
                continue;
            }
            if !scratch.is_empty() {
                self.encrypt(scratch, out)?;
                scratch.clear();
            }
            if piece.len() >= MAX_RECORD {
                self.encrypt(piece, out)?;
            } else {
                scratch.extend_from_slice(piece);
            }
        }
        if !scratch.is_empty() {
            self.encrypt(scratch, out)?;
            scratch.clear();
        }
        Ok(())
    }

    /// Appends a close_notify alert to the output, once (and only after the handshake;
    /// before it, closing the socket says as much).
    pub fn close_notify(&mut self) {
        if self.handshaking || self.failed || self.notified {
            return;
        }
        self.notified = true;
        let output = &mut self.output;
        match &mut self.engine {
            Engine::Rustls(side) => {
                let _ = on_side!(side.as_mut(), conn => {
                    match conn.process_tls_records(&mut []).state {
                        Ok(ConnectionState::WriteTraffic(mut w)) => grow_into(output, 64, |buf| {
                            w.queue_close_notify(buf).map_err(encrypt_size)
                        }),
                        _ => Ok(()),
                    }
                });
            }
            Engine::Records(r) => r.close_notify(output),
            Engine::Gone => {}
        }
    }

    fn encrypt(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), TlsError> {
        let records = data.len().div_ceil(MAX_RECORD).max(1);
        let estimate = data.len() + records * RECORD_OVERHEAD;
        let result = match &mut self.engine {
            Engine::Records(r) => {
                out.reserve(estimate);
                r.seal(data, out)
            }
            Engine::Rustls(side) => on_side!(side.as_mut(), conn => {
                match conn.process_tls_records(&mut []).state {
                    Ok(ConnectionState::WriteTraffic(mut w)) => {
                        grow_into(out, estimate, |buf| w.encrypt(data, buf).map_err(encrypt_size))
                    }
                    Ok(_) => Err(TlsError("not ready for application data".into())),
                    Err(e) => Err(e.into()),
                }
            }),
            Engine::Gone => Err(TlsError("the connection failed earlier".into())),
        };
        if result.is_err() {
            self.failed = true;
        }
        result
    }

    /// Runs the state machine over `buf` (ciphertext); returns how much of it was used
    /// and whether the peer closed.
    fn process(&mut self, buf: &mut [u8]) -> Result<(usize, bool), TlsError> {
        self.process_with(buf, &mut |_| {})
    }

    fn process_with(
        &mut self,
        buf: &mut [u8],
        plain: &mut dyn FnMut(&[u8]),
    ) -> Result<(usize, bool), TlsError> {
        let (mut used, mut peer_closed) = (0, false);
        if let Engine::Rustls(_) = self.engine {
            (used, peer_closed) = self.run_rustls(buf, plain)?;
            self.hand_over()?;
        }
        if let Engine::Records(r) = &mut self.engine {
            let (n, closed) = r
                .open(&mut buf[used..], plain, &mut self.output)
                .inspect_err(|_| self.failed = true)?;
            return Ok((used + n, peer_closed || closed));
        }
        Ok((used, peer_closed))
    }

    /// After a TLS 1.3 handshake, rustls hands the record layer over to `Records`
    /// (nothing else holds onto its state). TLS 1.2 stays with rustls.
    fn hand_over(&mut self) -> Result<(), TlsError> {
        let (done, tls13) = match &self.engine {
            Engine::Rustls(side) => on_side!(side.as_ref(), conn => {
                self.resumed = conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
                (
                    !conn.is_handshaking(),
                    conn.protocol_version() == Some(rustls::ProtocolVersion::TLSv1_3),
                )
            }),
            _ => (false, false),
        };
        if !(done && tls13) || self.failed {
            return Ok(());
        }
        let Engine::Rustls(side) = std::mem::replace(&mut self.engine, Engine::Gone) else {
            unreachable!("checked above");
        };
        let records = match *side {
            Side::Server(c) => c
                .dangerous_into_kernel_connection()
                .map_err(TlsError::from)
                .and_then(Records::server),
            Side::Client(c) => c
                .dangerous_into_kernel_connection()
                .map_err(TlsError::from)
                .and_then(Records::client),
        };
        match records {
            Ok(r) => {
                self.engine = Engine::Records(r);
                Ok(())
            }
            Err(e) => {
                self.failed = true;
                Err(e)
            }
        }
    }

    /// rustls' state machine over `buf`: the handshake, and TLS 1.2's records.
    fn run_rustls(
        &mut self,
        buf: &mut [u8],
        plain: &mut dyn FnMut(&[u8]),
    ) -> Result<(usize, bool), TlsError> {
        let Engine::Rustls(side) = &mut self.engine else {
            return Ok((0, false));
        };
        let mut used = 0;
        let mut peer_closed = false;
        loop {
            let step = on_side!(side.as_mut(), conn => {
                let status = conn.process_tls_records(&mut buf[used..]);
                step(status, &mut self.output, plain)
            });
            match step {
                Ok((discard, next)) => {
                    used += discard;
                    match next {
                        Next::Continue => {}
                        Next::Ready => {
                            self.handshaking = false;
                            return Ok((used, peer_closed));
                        }
                        Next::NeedData => return Ok((used, peer_closed)),
                        Next::PeerClosed => peer_closed = true,
                        Next::Closed => return Ok((used, true)),
                    }
                }
                Err((discard, e)) => {
                    used += discard;
                    self.failed = true;
                    // The alert saying why is queued: the next call encodes it (one
                    // call only: a second would process the input again and fail anew).
                    // The same buffer: rustls may hold ranges into it (the rest of a
                    // handshake flight).
                    on_side!(side.as_mut(), conn => {
                        if let Ok(ConnectionState::EncodeTlsData(mut enc)) =
                            conn.process_tls_records(&mut buf[used..]).state
                        {
                            let _ = grow_into(&mut self.output, 64, |b| enc.encode(b).map_err(encode_size));
                        }
                    });
                    return Err(e);
                }
            }
        }
    }
}

/// What to do after one state of the machine.
enum Next {
    /// It moved on: ask again.
    Continue,
    /// Handshake done, every complete record read.
    Ready,
    /// Handshaking and waiting for the peer's bytes.
    NeedData,
    /// The peer sent close_notify (reported once).
    PeerClosed,
    /// Closed both ways.
    Closed,
}

/// Acts on one status of either side's machine: plaintext to `plain`, records to `output`.
fn step<Data>(
    status: UnbufferedStatus<'_, '_, Data>,
    output: &mut Vec<u8>,
    plain: &mut dyn FnMut(&[u8]),
) -> Result<(usize, Next), (usize, TlsError)> {
    let UnbufferedStatus { mut discard, state } = status;
    let next = match state {
        Err(e) => return Err((discard, e.into())),
        Ok(ConnectionState::ReadTraffic(mut r)) => {
            while let Some(record) = r.next_record() {
                let record = record.map_err(|e| (discard, e.into()))?;
                discard += record.discard;
                plain(record.payload);
            }
            Next::Continue
        }
        Ok(ConnectionState::EncodeTlsData(mut enc)) => {
            grow_into(output, 512, |b| enc.encode(b).map_err(encode_size))
                .map_err(|e| (discard, e))?;
            Next::Continue
        }
        // The caller sends `output` before anything sealed later: in order, as if sent.
        Ok(ConnectionState::TransmitTlsData(t)) => {
            t.done();
            Next::Continue
        }
        Ok(ConnectionState::BlockedHandshake) => Next::NeedData,
        Ok(ConnectionState::WriteTraffic(_)) => Next::Ready,
        Ok(ConnectionState::PeerClosed) => Next::PeerClosed,
        Ok(ConnectionState::Closed) => Next::Closed,
        // Early data is never accepted (`max_early_data_size` stays 0).
        Ok(_) => return Err((discard, TlsError("unexpected TLS state".into()))),
    };
    Ok((discard, next))
}

/// `Ok(required size)` when a buffer was too small, the error otherwise.
type Sized = Result<usize, TlsError>;

fn encode_size(e: EncodeError) -> Sized {
    match e {
        EncodeError::InsufficientSize(InsufficientSizeError { required_size }) => Ok(required_size),
        EncodeError::AlreadyEncoded => Err(TlsError("record encoded twice".into())),
    }
}

fn encrypt_size(e: EncryptError) -> Sized {
    match e {
        EncryptError::InsufficientSize(InsufficientSizeError { required_size }) => {
            Ok(required_size)
        }
        e => Err(TlsError(e.to_string())),
    }
}

/// Appends what `write` writes to `out`, growing it to the size `write` asks for.
fn grow_into(
    out: &mut Vec<u8>,
    estimate: usize,
    mut write: impl FnMut(&mut [u8]) -> Result<usize, Sized>,
) -> Result<(), TlsError> {
    let start = out.len();
    let mut room = estimate;
    loop {
        out.resize(start + room, 0);
        match write(&mut out[start..]) {
            Ok(n) => {
                out.truncate(start + n);
                return Ok(());
            }
            Err(Ok(required)) if required > room => room = required,
            Err(Ok(_)) => {
                out.truncate(start);
                return Err(TlsError("TLS buffer sizing".into()));
            }
            Err(Err(e)) => {
                out.truncate(start);
                return Err(e);
            }
        }
    }
}

/// The server's cipher suites, in its order of preference, which it applies over the
/// client's: AES-128-GCM with SHA-256 first. rustls' clients list AES-256-GCM with
/// SHA-384 first, whose key schedule hashes with SHA-512's compression in software on
/// this CPU (SHA-256 has instructions): a full handshake cost the server 193-247 us with
/// the client's order against 115-138 us with this one (2,000 in-memory handshakes per
/// run, ECDSA P-256, alternating runs on a busy host; benches/RESULTS.md).
const SERVER_SUITES: &[rustls::SupportedCipherSuite] = {
    use rustls::crypto::aws_lc_rs::cipher_suite::*;
    &[
        TLS13_AES_128_GCM_SHA256,
        TLS13_AES_256_GCM_SHA384,
        TLS13_CHACHA20_POLY1305_SHA256,
        TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    ]
};

/// The server's TLS settings from a PEM certificate chain and key: TLS 1.2 and 1.3,
/// ALPN `http/1.1`, stateless resumption tickets from `ticketer` (kept across reloads,
/// so clients resume after a certificate change). Errors name the file.
pub fn server_config(
    cert: &Path,
    key: &Path,
    ticketer: Arc<dyn rustls::server::ProducesTickets>,
) -> Result<ServerConfig, String> {
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("--tls-cert {}: {}", cert.display(), pem_error(e)))?;
    if certs.is_empty() {
        return Err(format!(
            "--tls-cert {}: no CERTIFICATE in the file",
            cert.display()
        ));
    }
    let key_der = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("--tls-key {}: {}", key.display(), pem_error(e)))?;
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider.cipher_suites = SERVER_SUITES.to_vec();
    let mut config = ServerConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(|e| {
            format!(
                "--tls-key {} does not fit --tls-cert {}: {e}",
                key.display(),
                cert.display()
            )
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.ticketer = ticketer;
    config.ignore_client_order = true;
    config.send_tls13_tickets = 1;
    // The compact record layer after a TLS 1.3 handshake takes the traffic secrets.
    config.enable_secret_extraction = true;
    Ok(config)
}

/// A ticketer for [`server_config`]: stateless tickets, keys rotated every 6 hours.
pub fn ticketer() -> Result<Arc<dyn rustls::server::ProducesTickets>, String> {
    rustls::crypto::aws_lc_rs::Ticketer::new().map_err(|e| format!("TLS tickets: {e}"))
}

/// A client's TLS settings (the load generator's): trusting the certificates in the PEM
/// file `ca`, or with `insecure` any certificate (benchmarks against self-signed
/// servers). There is no system store to fall back on.
pub fn client_config(ca: Option<&Path>, insecure: bool) -> Result<ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?;
    let mut config = if insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth()
    } else {
        let mut roots = rustls::RootCertStore::empty();
        let Some(ca) = ca else {
            return Err("wss:// and https:// need --tls-ca FILE (or --tls-insecure)".into());
        };
        for cert in CertificateDer::pem_file_iter(ca)
            .map_err(|e| format!("--tls-ca {}: {}", ca.display(), pem_error(e)))?
        {
            let cert = cert.map_err(|e| format!("--tls-ca {}: {}", ca.display(), pem_error(e)))?;
            roots
                .add(cert)
                .map_err(|e| format!("--tls-ca {}: {e}", ca.display()))?;
        }
        if roots.is_empty() {
            return Err(format!(
                "--tls-ca {}: no CERTIFICATE in the file",
                ca.display()
            ));
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.enable_secret_extraction = true;
    Ok(config)
}

fn pem_error(e: rustls::pki_types::pem::Error) -> String {
    use rustls::pki_types::pem::Error;
    match e {
        Error::Io(e) => e.to_string(),
        Error::NoItemsFound => "no PEM item of the expected kind in the file".into(),
        e => format!("not valid PEM ({e:?})"),
    }
}

/// Accepts any server certificate (`--tls-insecure`): signatures are still checked, so
/// the handshake costs what a verified one does, minus the chain walk.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
