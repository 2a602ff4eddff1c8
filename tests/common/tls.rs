//! TLS for the tests: a certificate authority made per test run, a server certificate
//! it signed for `localhost` and 127.0.0.1 (written as PEM files for the server and the
//! peer clients), and a blocking rustls client over a `TcpStream`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::pki_types::ServerName;

/// PEM files in a directory of their own (removed on drop): `ca.pem` (the authority),
/// `cert.pem` (the server's chain: its certificate, then the authority's), `key.pem`.
pub struct Pki {
    pub dir: PathBuf,
}

impl Pki {
    /// A new authority and a server certificate it signed, for `localhost` and 127.0.0.1.
    pub fn new(tag: &str) -> Pki {
        let dir = std::env::temp_dir().join(format!(
            "ringpush-tls-{tag}-{}-{}",
            std::process::id(),
            rand_suffix()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let pki = Pki { dir };
        pki.issue("server");
        pki
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
    pub fn cert(&self) -> PathBuf {
        self.dir.join("cert.pem")
    }
    pub fn key(&self) -> PathBuf {
        self.dir.join("key.pem")
    }

    /// (Re)writes ca.pem, cert.pem and key.pem: a new authority and a server
    /// certificate with common name `cn` (a reload test tells the two apart by it).
    pub fn issue(&self, cn: &str) {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, format!("ringpush test CA {cn}"));
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &ca).unwrap();
        write_atomic(&self.ca(), &ca.pem());
        write_atomic(&self.cert(), &format!("{}{}", cert.pem(), ca.pem()));
        write_atomic(&self.key(), &key.serialize_pem());
    }

    /// A client configuration trusting this authority.
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        Arc::new(ringpush::proto::tls::client_config(Some(&self.ca()), false).unwrap())
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::Instant::now())
}

/// Writes through a temporary file and a rename, so a server reloading never reads half.
fn write_atomic(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// `ringpush serve` on `pki`'s certificate and key, with `args` after them.
pub fn server(pki: &Pki, args: &[&str]) -> Option<super::Server> {
    let (cert, key) = (pki.cert(), pki.key());
    let mut all = vec![
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ];
    all.extend_from_slice(args);
    super::Server::start(&all)
}

/// A blocking TLS client connection (rustls over a `TcpStream`).
pub type TlsStream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// Connects to `addr` and completes the handshake as `localhost`.
pub fn connect(addr: SocketAddr, config: Arc<rustls::ClientConfig>) -> std::io::Result<TlsStream> {
    let tcp = TcpStream::connect(addr)?;
    tcp.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    let conn = rustls::ClientConnection::new(config, ServerName::try_from("localhost").unwrap())
        .map_err(std::io::Error::other)?;
    let mut s = rustls::StreamOwned::new(conn, tcp);
    while s.conn.is_handshaking() {
        s.conn.complete_io(&mut s.sock)?;
    }
    Ok(s)
}

impl super::Sock for TlsStream {
    fn tcp(&self) -> &TcpStream {
        &self.sock
    }
}

/// A WebSocket over TLS: the upgrade to `path` done, its 101 checked.
pub fn ws(addr: SocketAddr, config: Arc<rustls::ClientConfig>, path: &str) -> super::Ws<TlsStream> {
    let mut s = connect(addr, config).expect("TLS handshake");
    s.write_all(super::upgrade_request(path, "").as_bytes())
        .unwrap();
    let (head, rest) = super::read_head(&mut s);
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    super::Ws::over(s, rest)
}

/// Sends an HTTP/1.1 request (with `Connection: close`) and returns the whole answer.
pub fn https(addr: SocketAddr, config: Arc<rustls::ClientConfig>, request: &str) -> String {
    let mut s = connect(addr, config).expect("TLS handshake");
    s.write_all(request.as_bytes()).unwrap();
    let mut out = Vec::new();
    // A server may close without close_notify after a Connection: close answer.
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}
