//! `--tls-cert` / `--tls-key`: the server's TLS settings, shared by every shard and
//! replaced as a whole on SIGHUP.
//!
//! A reload builds a new `rustls::ServerConfig` from the files; connections already
//! open keep the one they started with (their keys do not depend on the certificate
//! after the handshake), new handshakes take the new one. Shards notice a reload by a
//! version number read at each accept, so the hot path takes no lock. The resumption
//! ticket keys are kept across reloads: clients resume after a certificate change.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use rustls::ServerConfig;
use rustls::server::ProducesTickets;

use crate::proto::tls::{self, Tls, TlsError};

/// The current TLS settings and where they come from.
pub struct Certs {
    cert: PathBuf,
    key: PathBuf,
    ticketer: Arc<dyn ProducesTickets>,
    current: RwLock<Arc<ServerConfig>>,
    /// Bumped by every successful reload.
    version: AtomicU64,
}

impl std::fmt::Debug for Certs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certs")
            .field("cert", &self.cert)
            .field("version", &self.version)
            .finish()
    }
}

impl Certs {
    /// Reads the pair; the error is one line naming the file at fault.
    pub fn load(cert: PathBuf, key: PathBuf) -> Result<Certs, String> {
        let ticketer = tls::ticketer()?;
        let config = tls::server_config(&cert, &key, ticketer.clone())?;
        Ok(Certs {
            cert,
            key,
            ticketer,
            current: RwLock::new(Arc::new(config)),
            version: AtomicU64::new(0),
        })
    }

    /// Reads the files again; on an error the current pair stays.
    pub fn reload(&self) -> Result<(), String> {
        let config = tls::server_config(&self.cert, &self.key, self.ticketer.clone())?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(config);
        self.version.fetch_add(1, Ordering::Release);
        Ok(())
    }

    /// The certificate chain's file, for log lines.
    pub fn cert_path(&self) -> &std::path::Path {
        &self.cert
    }
}

/// A shard's view of [`Certs`]: the settings it hands to new connections, refreshed
/// when a reload happened.
#[derive(Debug)]
pub struct ShardCerts {
    certs: Arc<Certs>,
    version: u64,
    config: Arc<ServerConfig>,
}

impl ShardCerts {
    /// The settings current now.
    pub fn new(certs: Arc<Certs>) -> ShardCerts {
        let version = certs.version.load(Ordering::Acquire);
        let config = certs
            .current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        ShardCerts {
            certs,
            version,
            config,
        }
    }

    /// The TLS state of a connection just accepted, with the latest settings.
    pub fn session(&mut self) -> Result<Box<Tls>, TlsError> {
        if self.certs.version.load(Ordering::Acquire) != self.version {
            *self = ShardCerts::new(self.certs.clone());
        }
        Tls::server(self.config.clone()).map(Box::new)
    }
}
