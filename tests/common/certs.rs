//! Certificates for the HTTPS tests and bench, made fresh in a scratch directory by
//! `scripts/make-lab-certs.sh` (the script operators run, so the tests exercise it too): never
//! a key in the repository.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The script, from the crate's root.
pub const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/make-lab-certs.sh");

/// A lab CA and one server certificate it signed, as files.
#[derive(Debug, Clone)]
pub struct LabCerts {
    /// The CA's certificate (a client's `--cacert`).
    pub ca: PathBuf,
    /// The server's certificate (`--tls-cert`).
    pub cert: PathBuf,
    /// The server's key (`--tls-key`).
    pub key: PathBuf,
}

impl LabCerts {
    /// Runs the script on `dir` (created; a CA already there is reused) for a server
    /// certificate named `name`, valid for `sans`; panics with its output if it fails.
    pub fn make(dir: &Path, name: &str, sans: &[&str]) -> LabCerts {
        let out = Command::new("bash")
            .arg(SCRIPT)
            .args(["--name", name])
            .arg(dir)
            .args(sans)
            .output()
            .expect("run make-lab-certs.sh (bash)");
        assert!(
            out.status.success(),
            "make-lab-certs.sh failed (is openssl installed? scripts/install-deps.sh): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        LabCerts {
            ca: dir.join("ca.pem"),
            cert: dir.join(format!("{name}.pem")),
            key: dir.join(format!("{name}.key")),
        }
    }

    /// The server's certificate and key, loaded as `serve --tls-cert --tls-key` loads them.
    pub fn server_tls(&self) -> creepy_meow::tls::ServerTls {
        creepy_meow::tls::ServerTls::load(&self.cert, &self.key).expect("load the lab pair")
    }

    /// `serve`'s flags for this pair.
    pub fn serve_flags(&self) -> Vec<String> {
        vec![
            "--tls-cert".into(),
            self.cert.display().to_string(),
            "--tls-key".into(),
            self.key.display().to_string(),
        ]
    }
}
