//! HTTPS for the API (issue 14): the server's certificate chain and private key, PEM files, made
//! into a rustls configuration. They are read and checked when `serve`'s configuration is
//! resolved ([`crate::config`]), so a missing file, a file that is not PEM or a key that does not
//! belong to the certificate stops the daemon with one sentence before it opens the store or
//! touches the host. The API's accept loop ([`crate::api::serve`]) wraps each connection with
//! [`ServerTls::acceptor`].
//!
//! The files are read once: a renewed certificate takes a restart, which is clean (SIGTERM lets
//! the worker finish its step; queued jobs wait on disk).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

/// Which of the two files an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsFile {
    /// `--tls-cert`: the certificate chain, the server's own certificate first.
    Cert,
    /// `--tls-key`: the server certificate's private key.
    Key,
}

impl std::fmt::Display for TlsFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Cert => "certificate",
            Self::Key => "key",
        })
    }
}

/// Why the certificate and key cannot serve HTTPS, each a sentence for the operator.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file cannot be read (missing, not readable).
    #[error("cannot read the TLS {which} file {}: {source}", path.display())]
    Read {
        /// Which file.
        which: TlsFile,
        /// Its path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file holds no PEM block of the kind wanted (`CERTIFICATE`, or a `PRIVATE KEY`).
    #[error("the TLS {which} file {} holds no PEM {which} (a -----BEGIN {}----- block)", path.display(), pem_label(*which))]
    NoPem {
        /// Which file.
        which: TlsFile,
        /// Its path.
        path: PathBuf,
    },
    /// The file has PEM markers but cannot be decoded.
    #[error("the TLS {which} file {} is not valid PEM: {reason}", path.display())]
    BadPem {
        /// Which file.
        which: TlsFile,
        /// Its path.
        path: PathBuf,
        /// The decoder's words.
        reason: String,
    },
    /// The key is not the one the certificate was issued for.
    #[error("the TLS key {} does not belong to the certificate {}", key.display(), cert.display())]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// rustls refuses the pair for another reason (an unsupported key type, a broken
    /// certificate).
    #[error("the TLS certificate {} and key {} cannot be used: {source}", cert.display(), key.display())]
    Refused {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// rustls's reason.
        source: rustls::Error,
    },
}

/// The PEM label a file of `which` kind starts with, for the error sentence.
fn pem_label(which: TlsFile) -> &'static str {
    match which {
        TlsFile::Cert => "CERTIFICATE",
        TlsFile::Key => "PRIVATE KEY",
    }
}

/// A loaded, checked certificate chain and key, ready to accept connections.
#[derive(Debug, Clone)]
pub struct ServerTls {
    /// The certificate file, for the start-up log.
    cert: PathBuf,
    /// The rustls configuration every connection shares.
    config: Arc<ServerConfig>,
}

impl ServerTls {
    /// Reads the chain in `cert` and the key in `key` (PEM) and checks that they go together.
    ///
    /// # Errors
    /// When either file cannot be read, holds no PEM of its kind or broken PEM, or the key is
    /// not the certificate's.
    pub fn load(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let chain = read_chain(cert)?;
        let private = read_key(key)?;
        // rustls checks that the key's public half is the leaf certificate's.
        let mut config = ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(chain, private))
        .map_err(|source| match source {
            rustls::Error::InconsistentKeys(_) => TlsError::KeyMismatch {
                cert: cert.into(),
                key: key.into(),
            },
            source => TlsError::Refused {
                cert: cert.into(),
                key: key.into(),
                source,
            },
        })?;
        // The API speaks HTTP/1.1 (its clients, reqwest and curl, need nothing more).
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            cert: cert.into(),
            config: Arc::new(config),
        })
    }

    /// The certificate file this was loaded from.
    pub fn cert_path(&self) -> &Path {
        &self.cert
    }

    /// An acceptor that runs the server side of the handshake on a connection.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.config.clone())
    }
}

/// Reads the whole of `path`.
fn read(which: TlsFile, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        which,
        path: path.into(),
        source,
    })
}

/// Maps a PEM decoding error of file `which` at `path` to ours.
fn pem_error(which: TlsFile, path: &Path, e: pem::Error) -> TlsError {
    match e {
        pem::Error::NoItemsFound => TlsError::NoPem {
            which,
            path: path.into(),
        },
        e => TlsError::BadPem {
            which,
            path: path.into(),
            reason: e.to_string(),
        },
    }
}

/// Every certificate in `path`, in order: the server's, then the intermediates.
fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let text = read(TlsFile::Cert, path)?;
    let chain = CertificateDer::pem_slice_iter(&text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(TlsFile::Cert, path, e))?;
    if chain.is_empty() {
        return Err(pem_error(TlsFile::Cert, path, pem::Error::NoItemsFound));
    }
    Ok(chain)
}

/// The first private key in `path` (PKCS#8, PKCS#1 RSA or SEC1 EC).
fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let text = read(TlsFile::Key, path)?;
    PrivateKeyDer::from_pem_slice(&text).map_err(|e| pem_error(TlsFile::Key, path, e))
}
