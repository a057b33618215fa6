//! Trust for a BMC whose certificate the admin gave (`--bmc-ca FILE`), instead of the
//! system's CA certificates.
//!
//! A certificate in the file is trusted in two ways:
//! - as a **pin**: the BMC presents exactly that certificate (byte for byte) and proves it
//!   holds its key. A BMC's self-signed certificate is often marked as a CA, names the
//!   vendor's default host name rather than the BMC's address, or has a long-past start date;
//!   WebPKI refuses it as a server certificate whatever the roots, so the exact match is what
//!   an admin who copied the certificate from the BMC means (as with an SSH host key);
//! - as a **CA**: the BMC's certificate chains to it, with WebPKI's usual name, time and
//!   usage checks (a site CA that signs the BMCs' certificates).
//!
//! Nothing else is trusted for that BMC: not the system's roots.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::sync::Arc;

#[derive(Debug)]
pub(super) struct PinnedOrCa {
    pinned: Vec<CertificateDer<'static>>,
    webpki: Arc<WebPkiServerVerifier>,
}

/// The certificates of a PEM text (at least one), or why not.
pub(super) fn certificates(pem: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("the PEM text cannot be read ({e})"))?;
    if certs.is_empty() {
        return Err("there is no -----BEGIN CERTIFICATE----- block in it".into());
    }
    Ok(certs)
}

impl PinnedOrCa {
    pub(super) fn new(pem: &str) -> Result<Self, String> {
        let pinned = certificates(pem)?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in &pinned {
            roots.add(cert.clone()).map_err(|e| {
                format!(
                    "a certificate in it cannot be used ({e}); is it a certificate in PEM form?"
                )
            })?;
        }
        let webpki = WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::new(rustls::crypto::aws_lc_rs::default_provider()),
        )
        .build()
        .map_err(|e| format!("its certificates cannot be used ({e})"))?;
        Ok(Self { pinned, webpki })
    }

    /// A client configuration that trusts only these certificates.
    pub(super) fn client_config(self) -> Result<rustls::ClientConfig, String> {
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(self))
        .with_no_client_auth();
        Ok(config)
    }
}

impl ServerCertVerifier for PinnedOrCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self
            .pinned
            .iter()
            .any(|p| p.as_ref() == end_entity.as_ref())
        {
            return Ok(ServerCertVerified::assertion());
        }
        self.webpki
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    // The handshake's signature is checked as always: the BMC proves it holds the key of
    // the certificate it presented (pinned or not).
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}
