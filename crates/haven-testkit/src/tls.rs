//! Certificates for HTTPS tests: a private CA and a server certificate it
//! signs for `localhost`, `127.0.0.1` and `::1`, written as PEM files the
//! way operators get them (openssl, certbot, rcgen).

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

/// The kind and encoding of the server's private key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyKind {
    /// ECDSA P-256, PKCS#8 (`BEGIN PRIVATE KEY`).
    Ecdsa,
    /// RSA 2048, PKCS#1 (`BEGIN RSA PRIVATE KEY`, `openssl genrsa -traditional`).
    RsaPkcs1,
    /// RSA 2048, PKCS#8.
    RsaPkcs8,
}

/// PEM files of one test PKI.
pub struct Pki {
    /// The CA's certificate: what a device is told to trust.
    pub ca_cert: PathBuf,
    /// The server's certificate chain (its certificate, then the CA's).
    pub cert: PathBuf,
    /// The server's private key.
    pub key: PathBuf,
}

/// A new CA and a server certificate it signs, written under `dir`.
pub fn make(dir: &Path, kind: KeyKind) -> Pki {
    std::fs::create_dir_all(dir).unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "Haven test CA");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);

    let (server_key, key_pem) = match kind {
        KeyKind::Ecdsa => {
            let k = KeyPair::generate().unwrap();
            let pem = k.serialize_pem();
            (k, pem)
        }
        KeyKind::RsaPkcs1 | KeyKind::RsaPkcs8 => {
            use rsa::pkcs1::EncodeRsaPrivateKey;
            use rsa::pkcs8::EncodePrivateKey;
            let rsa = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).unwrap();
            let pkcs8 = rsa.to_pkcs8_pem(rsa::pkcs8::LineEnding::LF).unwrap();
            let k = KeyPair::from_pkcs8_pem_and_sign_algo(&pkcs8, &rcgen::PKCS_RSA_SHA256).unwrap();
            let pem = if kind == KeyKind::RsaPkcs1 {
                rsa.to_pkcs1_pem(rsa::pkcs1::LineEnding::LF)
                    .unwrap()
                    .to_string()
            } else {
                pkcs8.to_string()
            };
            (k, pem)
        }
    };
    let mut params = CertificateParams::new(vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ])
    .unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    let cert = params.signed_by(&server_key, &issuer).unwrap();

    let pki = Pki {
        ca_cert: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
    };
    std::fs::write(&pki.ca_cert, ca_cert.pem()).unwrap();
    std::fs::write(&pki.cert, format!("{}{}", cert.pem(), ca_cert.pem())).unwrap();
    std::fs::write(&pki.key, key_pem).unwrap();
    pki
}
