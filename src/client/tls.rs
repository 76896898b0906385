//! The client's side of HTTPS: which CAs it trusts (`--cacert`, else the system's roots through
//! reqwest's platform verifier), and a sentence for each way the server's certificate or the
//! handshake can fail, found in reqwest's error chain instead of shown as a dump of it.

use std::error::Error as StdError;
use std::path::Path;

use rustls::CertificateError;

/// The CA certificates in the PEM file `path`, for [`reqwest::ClientBuilder::tls_certs_only`].
///
/// # Errors
/// A sentence when the file cannot be read or holds no PEM certificate.
pub fn read_ca(path: &Path) -> Result<Vec<reqwest::Certificate>, String> {
    let pem = std::fs::read(path)
        .map_err(|e| format!("cannot read the CA file {}: {e}", path.display()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| format!("the CA file {} is not PEM: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "the CA file {} holds no PEM certificate (a -----BEGIN CERTIFICATE----- block)",
            path.display()
        ));
    }
    Ok(certs)
}

/// The rustls error somewhere in `e`'s chain of causes, if the request failed in TLS.
///
/// `std::io::Error` hides the error it wraps from `source()` (it returns that error's own
/// source), and the connector hands rustls's errors up inside I/O errors (two of them, as of
/// reqwest 0.13): so an I/O error is opened with `get_ref` instead.
pub fn rustls_cause<'e>(e: &'e (dyn StdError + 'static)) -> Option<&'e rustls::Error> {
    let mut next = Some(e);
    while let Some(err) = next {
        if let Some(found) = err.downcast_ref::<rustls::Error>() {
            return Some(found);
        }
        next = match err.downcast_ref::<std::io::Error>() {
            Some(io) => io.get_ref().map(|inner| inner as &(dyn StdError + 'static)),
            None => err.source(),
        };
    }
    None
}

/// The last error in `e`'s chain of causes: the one that says what happened (reqwest's own
/// names only the URL, or "builder error").
pub fn innermost<'e>(e: &'e (dyn StdError + 'static)) -> &'e (dyn StdError + 'static) {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause
}

/// What went wrong in TLS with the server at `base`, and what to do about it, in one sentence;
/// `with_ca` tells whether `--cacert` was given.
pub fn sentence(base: &str, e: &rustls::Error, with_ca: bool) -> String {
    let trust = if with_ca {
        "the CA in --cacert did not sign it"
    } else {
        "pass --cacert FILE (or set CREEPY_MEOW_CACERT) with the CA that signed it"
    };
    match e {
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => format!(
            "cannot trust the server at {base}: no CA this client trusts signed its certificate ({trust})"
        ),
        rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        ) => format!(
            "cannot trust the server at {base}: its certificate is not issued for that name (connect by a name or address the certificate lists)"
        ),
        rustls::Error::InvalidCertificate(CertificateError::BadSignature) => format!(
            "cannot trust the server at {base}: its certificate names a CA this client trusts, but that CA's key did not sign it (another CA of the same name?)"
        ),
        rustls::Error::InvalidCertificate(
            CertificateError::Expired | CertificateError::ExpiredContext { .. },
        ) => format!("cannot trust the server at {base}: its certificate has expired"),
        rustls::Error::InvalidCertificate(_) => format!("cannot trust the server at {base}: {e}"),
        rustls::Error::InvalidMessage(_) => format!(
            "the server at {base} does not speak TLS (if it serves plain HTTP, use an http:// URL)"
        ),
        other => format!("TLS with the server at {base} failed: {other}"),
    }
}
