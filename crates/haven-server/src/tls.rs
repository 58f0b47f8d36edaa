//! HTTPS served by the server itself (`tls_cert`, `tls_key`): a PEM
//! certificate chain and a PEM private key (PKCS#8, PKCS#1 or SEC1, RSA or
//! ECDSA, as openssl, certbot and rcgen write them). The files
//! are read again on SIGHUP, so a renewed certificate takes effect without
//! a restart; a renewal that does not load keeps the old one serving.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// The certificate chain in `cert` and the key in `key`, checked to belong
/// together, as a TLS configuration offering HTTP/2 and HTTP/1.1.
pub fn load(cert: &Path, key: &Path) -> anyhow::Result<Arc<ServerConfig>> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("cannot read the TLS certificate file {}", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| {
            format!(
                "{} is not a PEM certificate chain (it should hold -----BEGIN CERTIFICATE----- blocks)",
                cert.display()
            )
        })?;
    if chain.is_empty() {
        bail!(
            "{} holds no certificate: give the PEM certificate chain (server certificate first) as tls_cert",
            cert.display()
        );
    }
    let key_der = PrivateKeyDer::from_pem_file(key).with_context(|| {
        format!(
            "{} holds no usable private key: give a PEM key in PKCS#8 (BEGIN PRIVATE KEY), PKCS#1 (BEGIN RSA PRIVATE KEY) or SEC1 (BEGIN EC PRIVATE KEY) form, unencrypted",
            key.display()
        )
    })?;
    // ring, as the client's reqwest uses: no C toolchain beyond gcc to
    // build it. rustls deprecates it for lacking post-quantum key exchange
    // (DESIGN-NOTES.md).
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("the TLS library refused its default protocol versions")?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .with_context(|| {
            format!(
                "the key in {} does not go with the certificate in {}, or is of a kind TLS cannot use",
                key.display(),
                cert.display()
            )
        })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
