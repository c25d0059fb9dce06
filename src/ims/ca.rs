//! `--ca-file` (`OTC_CA_FILE`): extra CA certificates trusted for IMS, IAM
//! and the metadata service, on top of the built-in roots (never instead
//! of them), and the words for a certificate the client refused.

use std::path::{Path, PathBuf};

/// The certificates of a PEM file (one or more), parsed once.
#[derive(Clone, Debug)]
pub struct CaBundle {
    path: PathBuf,
    certs: Vec<reqwest::Certificate>,
}

impl CaBundle {
    /// Reads and checks the file: unreadable, no certificate, or one the
    /// TLS backend refuses is an error naming the file.
    pub fn load(path: &Path) -> Result<Self, String> {
        let shown = path.display();
        let pem = std::fs::read(path).map_err(|e| format!("--ca-file {shown}: cannot read it: {e}"))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("--ca-file {shown}: not PEM certificates: {e}"))?;
        if certs.is_empty() {
            return Err(format!("--ca-file {shown}: holds no PEM certificate (-----BEGIN CERTIFICATE-----)"));
        }
        let mut probe = reqwest::Client::builder().use_rustls_tls();
        for cert in &certs {
            probe = probe.add_root_certificate(cert.clone());
        }
        probe.build().map_err(|e| format!("--ca-file {shown}: a certificate cannot be used as a CA: {e}"))?;
        Ok(CaBundle { path: path.to_owned(), certs })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn len(&self) -> usize {
        self.certs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.certs.is_empty()
    }

    pub(crate) fn certificates(&self) -> &[reqwest::Certificate] {
        &self.certs
    }
}

/// When `err` (a transport error's chain) is rustls refusing the server's
/// certificate or the handshake, what to tell a person; `None` otherwise.
pub(crate) fn tls_failure(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(describe(tls));
        }
        // An io::Error shows its inner error's text but skips it as source.
        next = match e.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()) {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => e.source(),
        };
    }
    None
}

fn describe(err: &rustls::Error) -> String {
    match err {
        rustls::Error::InvalidCertificate(why) => format!(
            "TLS certificate verification failed: the server's certificate is not trusted ({why:?}); \
             if it is signed by a private CA, add that CA with --ca-file (OTC_CA_FILE)"
        ),
        other => format!("TLS handshake failed: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_without_a_usable_certificate_is_refused_with_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        assert!(CaBundle::load(&missing).unwrap_err().contains("cannot read"));
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let err = CaBundle::load(&empty).unwrap_err();
        assert!(err.contains("empty.pem") && err.contains("no PEM certificate"), "{err}");
        let broken = dir.path().join("broken.pem");
        std::fs::write(&broken, "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").unwrap();
        assert!(CaBundle::load(&broken).unwrap_err().contains("broken.pem"));
    }

    #[test]
    fn run_refuses_an_unusable_ca_file_at_start() {
        let args = crate::config::tests::args(&["--ca-file", "/nonexistent/ca.pem"]);
        assert!(args.validate().is_err_and(|e| e.contains("--ca-file")));
    }
}
