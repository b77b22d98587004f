//! TLS to PostgreSQL, as libpq's `sslmode` and `sslrootcert` ask for it (rustls with *ring*,
//! through `tokio-postgres-rustls`). The two options are taken out of the store URL here (or read
//! from `PGSSLMODE` and `PGSSLROOTCERT` when the URL has neither), since the client library knows
//! only `disable`, `prefer` and `require`:
//!
//! - `disable`: plain TCP;
//! - `allow`, `prefer` (the default, as with libpq) and `require`: TLS when the server offers it
//!   (`require`: or no connection); the certificate is not checked, unless a root file is given
//!   (`sslrootcert`) or libpq's default one exists (`~/.postgresql/root.crt`): then its chain is,
//!   as with `verify-ca`;
//! - `verify-ca`: TLS, the server's chain checked against the root certificates of `sslrootcert`
//!   (default `~/.postgresql/root.crt`);
//! - `verify-full`: as `verify-ca`, and the certificate must name the host of the URL (its
//!   address when the URL gives only `hostaddr`).
//!
//! As libpq, `sslmode` does not apply to Unix sockets. Unlike libpq: `allow` tries TLS first, as
//! `prefer` does; `prefer` does not retry in plain TCP after a failed handshake; the certificate
//! is checked by webpki, which needs the name in a subject alternative name (not the common name)
//! and refuses a CA certificate used as the server's own; no client certificates.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::StoreError;

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

/// What the URL asked for: the mode, and the root certificates file when given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TlsOptions {
    pub(crate) mode: SslMode,
    pub(crate) root: Option<PathBuf>,
}

/// Split `sslmode` and `sslrootcert` off a `postgres://` URL's query: the URL the client library
/// is given, and the options. Where the URL has neither, `PGSSLMODE` and `PGSSLROOTCERT` are read,
/// as libpq reads them.
pub(crate) fn split_url(url: &str) -> Result<(String, TlsOptions), StoreError> {
    split_url_with(url, |k| std::env::var(k).ok())
}

/// [`split_url`] with `env` in place of the process's environment.
pub(crate) fn split_url_with(url: &str, env: impl Fn(&str) -> Option<String>) -> Result<(String, TlsOptions), StoreError> {
    let (base, pairs) = url_parts(url)?;
    let mut mode: Option<String> = None;
    let mut root: Option<String> = None;
    for (_, key, value) in &pairs {
        let slot = match key.as_str() {
            "sslmode" => &mut mode,
            "sslrootcert" => &mut root,
            _ => continue,
        };
        *slot = Some(value.clone().ok_or_else(|| StoreError::Config(format!("store URL: {key} is not UTF-8")))?);
    }
    let (mode, mode_from) = match mode {
        Some(m) => (m, "store URL: sslmode"),
        None => (env("PGSSLMODE").filter(|m| !m.is_empty()).unwrap_or_else(|| "prefer".into()), "PGSSLMODE"),
    };
    let mode = match mode.as_str() {
        "disable" => SslMode::Disable,
        "allow" | "prefer" => SslMode::Prefer,
        "require" => SslMode::Require,
        "verify-ca" => SslMode::VerifyCa,
        "verify-full" => SslMode::VerifyFull,
        other => {
            return Err(StoreError::Config(format!("{mode_from} {other:?} is not one of disable, allow, prefer, require, verify-ca, verify-full")));
        }
    };
    let root = match root {
        Some(r) if r.is_empty() => return Err(StoreError::Config("store URL: sslrootcert is empty".into())),
        Some(r) => Some(PathBuf::from(r)),
        // An empty variable is no variable (libpq: the default file).
        None => env("PGSSLROOTCERT").filter(|r| !r.is_empty()).map(PathBuf::from),
    };
    Ok((url_without_tls(base, &pairs), TlsOptions { mode, root }))
}

/// One `key=value` of a URL's query: as written, the key decoded, the value decoded (`None`: not
/// UTF-8).
type QueryPair<'a> = (&'a str, String, Option<String>);

/// A `postgres://` URL's part before its query, and the query's pairs. The query starts
/// at the first `?` after the credentials (the client library reads them up to the first `@`, so
/// a `?` in a password is not taken for the query); keys and values are percent-decoded, as the
/// client library decodes them.
fn url_parts(url: &str) -> Result<(&str, Vec<QueryPair<'_>>), StoreError> {
    let rest = ["postgres://", "postgresql://"]
        .iter()
        .find_map(|p| url.strip_prefix(p))
        .ok_or_else(|| StoreError::Config("store URL: a postgres:// or postgresql:// URL is needed".into()))?;
    let from = url.len() - rest.len() + rest.find('@').map_or(0, |i| i + 1);
    let Some(q) = url[from..].find('?').map(|i| from + i) else { return Ok((url, Vec::new())) };
    let (base, query) = (&url[..q], &url[q + 1..]);
    let decode = |v: &str| percent_encoding::percent_decode_str(v).decode_utf8().map(|v| v.into_owned());
    let pairs = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let key = decode(k).unwrap_or_else(|_| k.to_string());
            (pair, key, decode(v).ok())
        })
        .collect();
    Ok((base, pairs))
}

/// The URL without `sslmode` and `sslrootcert` (for showing it; nothing checked).
pub(crate) fn without_tls_options(url: &str) -> String {
    match url_parts(url) {
        Ok((base, pairs)) => url_without_tls(base, &pairs),
        Err(_) => url.to_string(),
    }
}

/// `base` with the pairs of its query other than `sslmode` and `sslrootcert`, as written.
fn url_without_tls(base: &str, pairs: &[QueryPair<'_>]) -> String {
    let kept: Vec<&str> = pairs.iter().filter(|(_, k, _)| k != "sslmode" && k != "sslrootcert").map(|(p, _, _)| *p).collect();
    if kept.is_empty() { base.to_string() } else { format!("{base}?{}", kept.join("&")) }
}

impl TlsOptions {
    /// The client library's mode: whether TLS is tried, and whether it is required.
    pub(crate) fn client_mode(&self) -> postgres::config::SslMode {
        match self.mode {
            SslMode::Disable => postgres::config::SslMode::Disable,
            SslMode::Prefer => postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => postgres::config::SslMode::Require,
        }
    }

    /// The TLS connector for these options (the root certificates read now).
    pub(crate) fn connector(&self) -> Result<tokio_postgres_rustls::MakeRustlsConnect, StoreError> {
        // ring, not aws-lc-rs (a long C build on two cores); rustls marks ring's provider
        // deprecated for its lack of post-quantum key exchange, which PostgreSQL does not need.
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| StoreError::Config(format!("TLS: {e}")))?;
        let root = match (&self.root, self.mode) {
            // Plain TCP: no certificate is ever looked at.
            (_, SslMode::Disable) => None,
            (Some(p), _) => Some(p.clone()),
            (None, SslMode::VerifyCa | SslMode::VerifyFull) => Some(default_root().ok_or_else(|| {
                StoreError::Config(format!(
                    "sslmode={} needs the server's root certificates: sslrootcert=PATH, PGSSLROOTCERT, or ~/.postgresql/root.crt",
                    if self.mode == SslMode::VerifyCa { "verify-ca" } else { "verify-full" }
                ))
            })?),
            // libpq: with its default root file present, `prefer` and `require` check the chain.
            (None, _) => default_root(),
        };
        let verifier: Arc<dyn ServerCertVerifier> = match root {
            None => Arc::new(Unverified(provider.signature_verification_algorithms)),
            Some(path) => {
                let roots = read_roots(&path)?;
                let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
                    .build()
                    .map_err(|e| StoreError::Config(format!("TLS: root certificates {}: {e}", path.display())))?;
                if self.mode == SslMode::VerifyFull { webpki } else { Arc::new(ChainOnly(webpki)) }
            }
        };
        let mut config = builder.dangerous().with_custom_certificate_verifier(verifier).with_no_client_auth();
        // PostgreSQL's protocol name, which servers that take TLS directly (`sslnegotiation=direct`,
        // PostgreSQL 17) require; others ignore it.
        config.alpn_protocols = vec![b"postgresql".to_vec()];
        Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
    }
}

/// libpq's default root certificates file, when it exists.
fn default_root() -> Option<PathBuf> {
    let p = PathBuf::from(std::env::var_os("HOME")?).join(".postgresql/root.crt");
    p.is_file().then_some(p)
}

fn read_roots(path: &std::path::Path) -> Result<RootCertStore, StoreError> {
    let bad = |e: String| StoreError::Config(format!("sslrootcert {}: {e}", path.display()));
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path).map_err(|e| bad(e.to_string()))? {
        roots.add(cert.map_err(|e| bad(e.to_string()))?).map_err(|e| bad(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(bad("no certificate in the file".into()));
    }
    Ok(roots)
}

/// `prefer` and `require` without root certificates: the connection is encrypted, and whoever
/// answers is trusted (libpq's behaviour). The handshake's signatures are still checked.
#[derive(Debug)]
struct Unverified(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(&self, _: &CertificateDer<'_>, _: &[CertificateDer<'_>], _: &ServerName<'_>, _: &[u8], _: UnixTime) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

/// `verify-ca`: the chain must lead to a given root; the name in the certificate is not checked.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.0.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(rustls::Error::InvalidCertificate(CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. })) => {
                Ok(ServerCertVerified::assertion())
            }
            other => other,
        }
    }

    fn verify_tls12_signature(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::{SslMode, split_url_with};

    /// Without `PGSSLMODE` or `PGSSLROOTCERT` in the environment.
    fn split_url(url: &str) -> Result<(String, super::TlsOptions), crate::StoreError> {
        split_url_with(url, |_| None)
    }

    #[test]
    fn the_query_starts_after_the_credentials_and_its_keys_are_decoded() {
        let (url, o) = split_url("postgres://u:pa?ss&x@h/db?sslmode=require&application_name=a").expect("test");
        assert_eq!((url.as_str(), o.mode), ("postgres://u:pa?ss&x@h/db?application_name=a", SslMode::Require));
        let (url, o) = split_url("postgresql://h/db?ssl%6Dode=verify-ca&sslrootcert=/r.pem").expect("test");
        assert_eq!((url.as_str(), o.mode), ("postgresql://h/db", SslMode::VerifyCa));
        assert_eq!(super::without_tls_options("postgres://u:p@h/db?sslmode=nonsense&x=1"), "postgres://u:p@h/db?x=1");
        let e = split_url("host=h sslmode=require").expect_err("refused").to_string();
        assert!(e.contains("a postgres:// or postgresql:// URL is needed"), "{e}");
    }

    #[test]
    fn plain_tcp_reads_no_root_file() {
        let (_, o) = split_url("postgres://h/db?sslmode=disable&sslrootcert=/nonexistent/ca.pem").expect("test");
        assert!(o.connector().is_ok());
    }

    #[test]
    fn pgsslmode_and_pgsslrootcert_apply_where_the_url_has_neither() {
        let env = |k: &str| match k {
            "PGSSLMODE" => Some("verify-full".to_string()),
            "PGSSLROOTCERT" => Some("/etc/ca.pem".to_string()),
            _ => None,
        };
        let (_, o) = split_url_with("postgres://h/db", env).expect("test");
        assert_eq!((o.mode, o.root.as_deref()), (SslMode::VerifyFull, Some(std::path::Path::new("/etc/ca.pem"))));
        // The URL's own options win.
        let (_, o) = split_url_with("postgres://h/db?sslmode=disable&sslrootcert=/x.pem", env).expect("test");
        assert_eq!((o.mode, o.root.as_deref()), (SslMode::Disable, Some(std::path::Path::new("/x.pem"))));
        // Empty variables are no variables.
        let (_, o) = split_url_with("postgres://h/db", |_| Some(String::new())).expect("test");
        assert_eq!((o.mode, o.root), (SslMode::Prefer, None));
        let e = split_url_with("postgres://h/db", |k| (k == "PGSSLMODE").then(|| "on".to_string())).expect_err("refused").to_string();
        assert!(e.starts_with("PGSSLMODE \"on\" is not one of"), "{e}");
    }

    #[test]
    fn the_tls_options_are_taken_out_of_the_url() {
        let (url, o) = split_url("postgres://u:p@h:5/db").expect("test");
        assert_eq!((url.as_str(), o.mode, o.root), ("postgres://u:p@h:5/db", SslMode::Prefer, None));
        let (url, o) = split_url("postgres://u@h/db?application_name=x&sslmode=verify-full&sslrootcert=%2Fetc%2Fca%20b.pem&connect_timeout=3").expect("test");
        assert_eq!(url, "postgres://u@h/db?application_name=x&connect_timeout=3");
        assert_eq!(o.mode, SslMode::VerifyFull);
        assert_eq!(o.root.as_deref(), Some(std::path::Path::new("/etc/ca b.pem")));
        assert_eq!(split_url("postgres://h/db?sslmode=disable").expect("test"), ("postgres://h/db".into(), super::TlsOptions { mode: SslMode::Disable, root: None }));
        assert_eq!(split_url("postgres://h/db?sslmode=allow").expect("test").1.mode, SslMode::Prefer);
        let e = split_url("postgres://h/db?sslmode=verify_full").expect_err("refused").to_string();
        assert!(e.contains("\"verify_full\" is not one of"), "{e}");
        assert!(split_url("postgres://h/db?sslrootcert=").is_err());
    }

    #[test]
    fn verification_without_root_certificates_is_refused_before_connecting() {
        let (_, o) = split_url("postgres://h/db?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem").expect("test");
        let e = o.connector().err().expect("no connector").to_string();
        assert!(e.contains("sslrootcert /nonexistent/ca.pem"), "{e}");
        let dir = tempfile::tempdir().expect("test");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").expect("test");
        let (_, o) = split_url(&format!("postgres://h/db?sslmode=verify-ca&sslrootcert={}", empty.display())).expect("test");
        let e = o.connector().err().expect("no connector").to_string();
        assert!(e.contains("no certificate in the file"), "{e}");
    }
}
