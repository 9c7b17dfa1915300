//! `[tls]`: TLS for the gRPC port (rustls, ring provider), read and checked
//! once at start-up so that a missing file, a file that is not PEM or a key
//! that does not fit its certificate stops the start with an error naming
//! the key. The result, [`TlsConfig`], holds the tonic server settings that
//! serving applies as they are.
//!
//! `cert_path` and `key_path` turn TLS on; `client_ca_path` adds mutual TLS:
//! every client must then present a certificate signed by that CA, and the
//! handshake of a client without one fails.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use serde::{Deserialize, Serialize};
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};

use super::error::ConfigError;

/// A TLS handshake not finished within this is dropped, so idle or slow
/// connections cannot pile up before the first request.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// `[tls]` as written in the config file. Empty strings mean unset.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsSection {
    /// PEM certificate chain of the server, leaf first.
    pub cert_path: String,
    /// PEM private key of the server (PKCS#8, PKCS#1 or SEC1).
    pub key_path: String,
    /// PEM CA certificate(s) that client certificates must chain to; set
    /// to require client certificates (mutual TLS).
    pub client_ca_path: String,
}

/// The checked TLS settings.
#[derive(Debug, Clone)]
pub struct TlsConfig {
    /// Where the certificate chain was read from.
    pub cert_path: PathBuf,
    /// Where the key was read from.
    pub key_path: PathBuf,
    /// Where the client CA was read from (`Some`: mutual TLS).
    pub client_ca_path: Option<PathBuf>,
    server: ServerTlsConfig,
}

impl TlsConfig {
    /// The tonic server settings built from the files.
    pub fn server_config(&self) -> ServerTlsConfig {
        self.server.clone()
    }

    /// Whether clients must present a certificate.
    pub fn is_mutual(&self) -> bool {
        self.client_ca_path.is_some()
    }
}

fn err(key: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::new(key, reason)
}

/// The error and its causes on one line (tonic's own message is only
/// "transport error").
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn read(key: &str, path: &str) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(Path::new(path)).map_err(|e| err(key, format!("cannot read {path:?}: {e}")))
}

/// Reads a PEM file of certificates, refusing one that holds none.
fn read_certs(key: &str, path: &str) -> Result<Vec<u8>, ConfigError> {
    let pem = read(key, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(key, format!("{path:?} is not valid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(err(
            key,
            format!("{path:?} holds no PEM certificate (-----BEGIN CERTIFICATE-----)"),
        ));
    }
    Ok(pem)
}

impl TlsSection {
    /// Reads and checks the files; `Ok(None)` when TLS is off (no key set).
    pub fn check(&self) -> Result<Option<TlsConfig>, ConfigError> {
        let (cert_path, key_path, ca_path) = (
            self.cert_path.trim(),
            self.key_path.trim(),
            self.client_ca_path.trim(),
        );
        match (cert_path.is_empty(), key_path.is_empty()) {
            (true, true) if ca_path.is_empty() => return Ok(None),
            (true, true) => {
                return Err(err(
                    "tls.client_ca_path",
                    "needs tls.cert_path and tls.key_path (mutual TLS is TLS first)",
                ));
            }
            (false, true) => return Err(err("tls.key_path", "must be set with tls.cert_path")),
            (true, false) => return Err(err("tls.cert_path", "must be set with tls.key_path")),
            (false, false) => {}
        }
        let cert = read_certs("tls.cert_path", cert_path)?;
        let key = read("tls.key_path", key_path)?;
        match PrivateKeyDer::from_pem_slice(&key) {
            Ok(_) => {}
            Err(rustls_pki_types::pem::Error::NoItemsFound) => {
                return Err(err(
                    "tls.key_path",
                    format!("{key_path:?} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)"),
                ));
            }
            Err(e) => {
                return Err(err(
                    "tls.key_path",
                    format!("{key_path:?} is not valid PEM: {e}"),
                ));
            }
        }
        let server = ServerTlsConfig::new()
            .identity(Identity::from_pem(cert, key))
            .timeout(TLS_HANDSHAKE_TIMEOUT);
        // Build the rustls config now, as serving will: a key that does not
        // match its certificate fails here, not after the port is bound.
        Server::builder().tls_config(server.clone()).map_err(|e| {
            err(
                "tls.key_path",
                format!(
                    "{key_path:?} cannot be used with the certificate {cert_path:?}: {}",
                    chain(&e)
                ),
            )
        })?;
        let (server, client_ca_path) = if ca_path.is_empty() {
            (server, None)
        } else {
            let ca = read_certs("tls.client_ca_path", ca_path)?;
            let server = server.client_ca_root(Certificate::from_pem(ca));
            Server::builder().tls_config(server.clone()).map_err(|e| {
                err(
                    "tls.client_ca_path",
                    format!("{ca_path:?} holds no usable CA certificate: {}", chain(&e)),
                )
            })?;
            (server, Some(PathBuf::from(ca_path)))
        };
        Ok(Some(TlsConfig {
            cert_path: PathBuf::from(cert_path),
            key_path: PathBuf::from(key_path),
            client_ca_path,
            server,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Files {
        dir: tempfile::TempDir,
    }

    impl Files {
        fn new() -> Self {
            Self {
                dir: tempfile::tempdir().unwrap(),
            }
        }

        fn write(&self, name: &str, content: &str) -> String {
            let p = self.dir.path().join(name);
            std::fs::write(&p, content).unwrap();
            p.display().to_string()
        }
    }

    fn section(cert: &str, key: &str, ca: &str) -> TlsSection {
        TlsSection {
            cert_path: cert.into(),
            key_path: key.into(),
            client_ca_path: ca.into(),
        }
    }

    #[test]
    fn unset_is_off() {
        assert!(TlsSection::default().check().unwrap().is_none());
    }

    #[test]
    fn incomplete_settings_name_the_missing_key() {
        assert_eq!(
            section("c", "", "").check().unwrap_err().key,
            "tls.key_path"
        );
        assert_eq!(
            section("", "k", "").check().unwrap_err().key,
            "tls.cert_path"
        );
        assert_eq!(
            section("", "", "ca").check().unwrap_err().key,
            "tls.client_ca_path"
        );
    }

    #[test]
    fn bad_files_name_their_key() {
        let f = Files::new();
        let junk = f.write("junk.pem", "not a certificate\n");
        let broken = f.write(
            "broken.pem",
            "-----BEGIN CERTIFICATE-----\nMIIB\n", // no END line
        );
        let missing = f.dir.path().join("missing.pem").display().to_string();

        let e = section(&missing, &junk, "").check().unwrap_err();
        assert_eq!(e.key, "tls.cert_path");
        assert!(e.reason.contains("cannot read"), "{e}");
        let e = section(&junk, &junk, "").check().unwrap_err();
        assert_eq!(e.key, "tls.cert_path");
        assert!(e.reason.contains("no PEM certificate"), "{e}");
        let e = section(&broken, &junk, "").check().unwrap_err();
        assert_eq!(e.key, "tls.cert_path");
        assert!(e.reason.contains("not valid PEM"), "{e}");
    }
    fn self_signed(name: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![name.to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn good_files_load_and_mismatches_are_refused() {
        let f = Files::new();
        let (cert, key) = self_signed("localhost");
        let (_, other_key) = self_signed("other");
        let cert = f.write("cert.pem", &cert);
        let key = f.write("key.pem", &key);
        let other_key = f.write("other.pem", &other_key);
        let junk = f.write("junk.pem", "nothing here\n");

        let tls = section(&cert, &key, "").check().unwrap().unwrap();
        assert!(!tls.is_mutual());
        let tls = section(&cert, &key, &cert).check().unwrap().unwrap();
        assert!(tls.is_mutual());

        let e = section(&cert, &other_key, "").check().unwrap_err();
        assert_eq!(e.key, "tls.key_path", "{e}");
        let e = section(&cert, &junk, "").check().unwrap_err();
        assert_eq!(e.key, "tls.key_path");
        assert!(e.reason.contains("no PEM private key"), "{e}");
        let e = section(&cert, &key, &junk).check().unwrap_err();
        assert_eq!(e.key, "tls.client_ca_path");
    }
}
