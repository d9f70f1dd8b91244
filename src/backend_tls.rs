//! TLS towards the backends, for the proxy's server connections and the health checks alike
//! (`[backend_tls]`, each backend's `sslmode`, with libpq's meanings): the rustls client
//! configurations for each mode, and the SSLRequest negotiation on a fresh connection
//! (PostgreSQL protocol §53.2.10). A leaf: it knows neither the proxy nor health.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::client::WebPkiServerVerifier;
use tokio_rustls::rustls::crypto::{self, CryptoProvider};
use tokio_rustls::rustls::{
    self, CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio_rustls::TlsConnector;

use crate::config::{BackendTlsConfig, SslMode};
use crate::pem::{read_certs, read_key, PemError};

/// An SSLRequest: length 8, code 80877103 (1234 << 16 | 5679).
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

#[derive(Debug, thiserror::Error)]
pub enum BackendTlsError {
    #[error(transparent)]
    Pem(#[from] PemError),
    #[error("{path}: {reason}")]
    BadCa { path: PathBuf, reason: String },
    #[error("[backend_tls]: {0}")]
    Config(rustls::Error),
    #[error("sslmode={0} needs [backend_tls] ca, and none is loaded")]
    NoCa(&'static str),
    #[error("the server does not support TLS, but sslmode={0} requires it")]
    Refused(&'static str),
    #[error("unexpected answer {0:#04x} to SSLRequest")]
    BadAnswer(u8),
    #[error("{0:?} is not a valid TLS server name")]
    BadName(String),
    #[error("TLS handshake: {0}")]
    Handshake(io::Error),
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
}

/// The client configurations, one per kind of verification.
pub struct BackendTls {
    unverified: Arc<ClientConfig>,
    /// With `[backend_tls] ca` only.
    verify_ca: Option<Arc<ClientConfig>>,
    verify_full: Option<Arc<ClientConfig>>,
}

/// A fresh backend connection after the negotiation.
pub enum Negotiated {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

fn provider() -> Arc<CryptoProvider> {
    // aws-lc-rs, as for the clients' side (see proxy::tls): one crypto library in the binary.
    Arc::new(crypto::aws_lc_rs::default_provider())
}

impl BackendTls {
    /// Reads the CA and the client certificate, if configured.
    pub fn new(cfg: &BackendTlsConfig) -> Result<BackendTls, BackendTlsError> {
        let provider = provider();
        let client_cert = match &cfg.client_cert {
            None => None,
            Some((cert, key)) => Some((read_certs(cert)?, read_key(key)?)),
        };
        let build = |verifier: Arc<dyn ServerCertVerifier>| {
            let b = ClientConfig::builder_with_provider(Arc::clone(&provider))
                .with_safe_default_protocol_versions()
                .map_err(BackendTlsError::Config)?
                .dangerous()
                .with_custom_certificate_verifier(verifier);
            let config = match &client_cert {
                None => b.with_no_client_auth(),
                Some((chain, key)) => b
                    .with_client_auth_cert(chain.clone(), key.clone_key())
                    .map_err(BackendTlsError::Config)?,
            };
            Ok::<_, BackendTlsError>(Arc::new(config))
        };
        let unverified = build(Arc::new(Unverified(Arc::clone(&provider))))?;
        let (verify_ca, verify_full) = match &cfg.ca {
            None => (None, None),
            Some(ca) => {
                let mut roots = RootCertStore::empty();
                for cert in read_certs(ca)? {
                    roots.add(cert).map_err(BackendTlsError::Config)?;
                }
                let webpki = WebPkiServerVerifier::builder_with_provider(
                    Arc::new(roots),
                    Arc::clone(&provider),
                )
                .build()
                .map_err(|e| BackendTlsError::BadCa {
                    path: ca.clone(),
                    reason: e.to_string(),
                })?;
                (
                    Some(build(Arc::new(ChainOnly(Arc::clone(&webpki))))?),
                    Some(build(webpki)?),
                )
            }
        };
        Ok(BackendTls {
            unverified,
            verify_ca,
            verify_full,
        })
    }

    /// The client configuration for `mode` (none: `disable`, or verification without a CA,
    /// which the configuration's validation rules out).
    pub fn client_config(&self, mode: SslMode) -> Option<Arc<ClientConfig>> {
        match mode {
            SslMode::Disable => None,
            SslMode::Prefer | SslMode::Require => Some(Arc::clone(&self.unverified)),
            SslMode::VerifyCa => self.verify_ca.clone(),
            SslMode::VerifyFull => self.verify_full.clone(),
        }
    }

    /// Asks a freshly connected backend for TLS as `mode` says and shakes hands.
    pub async fn negotiate(
        &self,
        mut tcp: TcpStream,
        mode: SslMode,
        host: &str,
    ) -> Result<Negotiated, BackendTlsError> {
        if mode == SslMode::Disable {
            return Ok(Negotiated::Plain(tcp));
        }
        // Verification without a loaded CA (a reload that could not read it): fail closed,
        // never clear text where TLS was asked for.
        let config = self
            .client_config(mode)
            .ok_or(BackendTlsError::NoCa(mode_name(mode)))?;
        tcp.write_all(&SSL_REQUEST).await?;
        match tcp.read_u8().await? {
            b'S' => {}
            b'N' if mode == SslMode::Prefer => return Ok(Negotiated::Plain(tcp)),
            b'N' => return Err(BackendTlsError::Refused(mode_name(mode))),
            other => return Err(BackendTlsError::BadAnswer(other)),
        }
        let name = ServerName::try_from(host.to_string())
            .map_err(|_| BackendTlsError::BadName(host.to_string()))?;
        let tls = TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(BackendTlsError::Handshake)?;
        Ok(Negotiated::Tls(Box::new(tls)))
    }
}

fn mode_name(mode: SslMode) -> &'static str {
    match mode {
        SslMode::Disable => "disable",
        SslMode::Prefer => "prefer",
        SslMode::Require => "require",
        SslMode::VerifyCa => "verify-ca",
        SslMode::VerifyFull => "verify-full",
    }
}

/// `prefer` and `require`: any certificate, as libpq does without a root certificate; the
/// handshake's signatures are still checked (the server holds the key of what it sent).
#[derive(Debug)]
struct Unverified(Arc<CryptoProvider>);

/// `verify-ca`: the chain must lead to the CA; the name in it is not checked.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// The configurations new backend connections use; replaced at reload.
pub struct CurrentBackendTls(std::sync::RwLock<Arc<BackendTls>>);

impl CurrentBackendTls {
    pub fn new(cfg: &BackendTlsConfig) -> Result<CurrentBackendTls, BackendTlsError> {
        Ok(CurrentBackendTls(std::sync::RwLock::new(Arc::new(
            BackendTls::new(cfg)?,
        ))))
    }

    pub fn current(&self) -> Arc<BackendTls> {
        Arc::clone(
            &self
                .0
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// Reads the files again; on an error the running configurations stay.
    pub fn reload(&self, cfg: &BackendTlsConfig) -> Result<(), BackendTlsError> {
        let new = Arc::new(BackendTls::new(cfg)?);
        *self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = new;
        Ok(())
    }
}
