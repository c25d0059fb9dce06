//! A throwaway CA and a server certificate it signed for 127.0.0.1 and
//! localhost, made at test time (rcgen), as PEM files in a temporary folder.

use std::path::PathBuf;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

pub struct TestCa {
    /// The CA's certificate (what `--ca-file` names).
    pub ca_pem: String,
    pub ca_file: PathBuf,
    /// The server's certificate chain and key (ims-sim's `--tls-cert`/`--tls-key`).
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    _dir: tempfile::TempDir,
}

impl TestCa {
    /// A new CA named `name` and a server certificate it signed.
    pub fn new(name: &str) -> Self {
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name.push(DnType::CommonName, name);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
        let mut server = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
        server.distinguished_name.push(DnType::CommonName, "ims-sim");
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().unwrap();
        let cert = server.signed_by(&key, &ca).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (ca_file, cert_file, key_file) =
            (dir.path().join("ca.pem"), dir.path().join("tls.crt"), dir.path().join("tls.key"));
        std::fs::write(&ca_file, ca.pem()).unwrap();
        std::fs::write(&cert_file, cert.pem()).unwrap();
        std::fs::write(&key_file, key.serialize_pem()).unwrap();
        TestCa { ca_pem: ca.pem(), ca_file, cert_file, key_file, _dir: dir }
    }
}
