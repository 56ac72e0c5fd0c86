//! Optional TLS on the TCP listeners (`[tls]`): rustls with the
//! certificate chain and private key read from PEM files at start-up.
//!
//! Handshakes run in their own tasks, each bounded by
//! `HANDSHAKE_TIMEOUT`, so a client that connects and stalls (or speaks
//! plain HTTP to a TLS port) holds up no one; finished connections queue
//! for the HTTP or gRPC server. ALPN offers `h2` and `http/1.1`: gRPC
//! clients require `h2`, browsers and SDKs pick either.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// A handshake not finished by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Finished handshakes waiting for the server to take them.
const ACCEPTED_QUEUE: usize = 64;

/// The listeners TLS can cover (UDP cannot).
pub const TLS_LISTENERS: [&str; 4] = ["xray-api", "otlp-grpc", "otlp-http", "http"];

/// `[tls]`: off unless both files are set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// Which listeners serve TLS; empty: all of `xray-api`, `otlp-grpc`,
    /// `otlp-http` and `http`.
    pub listeners: Vec<String>,
}

/// Why `[tls]` could not be loaded; each names the setting or file at
/// fault.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("[tls] needs both cert_file and key_file")]
    Incomplete,
    #[error("[tls] listeners: {0:?} is not one of {list}", list = TLS_LISTENERS.join(", "))]
    UnknownListener(String),
    #[error("reading certificates from {}", .0.display())]
    Certificates(PathBuf, #[source] rustls_pki_types::pem::Error),
    #[error("{} holds no PEM certificate", .0.display())]
    NoCertificate(PathBuf),
    #[error("reading the private key from {}", .0.display())]
    PrivateKey(PathBuf, #[source] rustls_pki_types::pem::Error),
    #[error("TLS protocol versions")]
    ProtocolVersions(#[source] rustls::Error),
    #[error("{} and {} do not make a usable certificate and key", .cert.display(), .key.display())]
    Unusable {
        cert: PathBuf,
        key: PathBuf,
        #[source]
        source: rustls::Error,
    },
}

impl TlsConfig {
    /// The acceptor, when TLS is configured; errors name the file at fault.
    pub fn acceptor(&self) -> Result<Option<TlsAcceptor>, TlsError> {
        let (cert_file, key_file) = match (&self.cert_file, &self.key_file) {
            (None, None) => return Ok(None),
            (Some(cert), Some(key)) => (cert, key),
            _ => return Err(TlsError::Incomplete),
        };
        if let Some(name) = self
            .listeners
            .iter()
            .find(|name| !TLS_LISTENERS.contains(&name.as_str()))
        {
            return Err(TlsError::UnknownListener(name.clone()));
        }
        let certificates: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_file)
            .and_then(|certificates| certificates.collect())
            .map_err(|error| TlsError::Certificates(cert_file.clone(), error))?;
        if certificates.is_empty() {
            return Err(TlsError::NoCertificate(cert_file.clone()));
        }
        let key = PrivateKeyDer::from_pem_file(key_file)
            .map_err(|error| TlsError::PrivateKey(key_file.clone(), error))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(TlsError::ProtocolVersions)?
            .with_no_client_auth()
            .with_single_cert(certificates, key)
            .map_err(|source| TlsError::Unusable {
                cert: cert_file.clone(),
                key: key_file.clone(),
                source,
            })?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Some(TlsAcceptor::from(Arc::new(config))))
    }

    /// Whether listener `name` serves TLS (given an acceptor).
    pub fn covers(&self, name: &str) -> bool {
        self.listeners.is_empty() || self.listeners.iter().any(|listener| listener == name)
    }
}

/// A TLS connection, as both axum and tonic take it.
pub struct TlsConnection(TlsStream<TcpStream>);

impl AsyncRead for TlsConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        context: &mut TaskContext<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(context, buffer)
    }
}

impl AsyncWrite for TlsConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        context: &mut TaskContext<'_>,
        buffer: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(context, buffer)
    }

    fn poll_flush(
        mut self: Pin<&mut Self>,
        context: &mut TaskContext<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(context)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        context: &mut TaskContext<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(context)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        context: &mut TaskContext<'_>,
        buffers: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(context, buffers)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
}

impl tonic::transport::server::Connected for TlsConnection {
    type ConnectInfo = Option<SocketAddr>;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.0.get_ref().0.peer_addr().ok()
    }
}

/// Accepts TCP connections on `listener` and hands on those whose
/// handshake succeeds, until the receiver is dropped.
pub fn accept(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    name: &'static str,
) -> mpsc::Receiver<(TlsConnection, SocketAddr)> {
    let (sender, receiver) = mpsc::channel(ACCEPTED_QUEUE);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = sender.closed() => return,
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of descriptors and the like: pause rather than spin.
                    tracing::warn!(listener = name, %error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let (acceptor, sender) = (acceptor.clone(), sender.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(connection)) => {
                        let _ = sender.send((TlsConnection(connection), peer)).await;
                    }
                    Ok(Err(error)) => {
                        tracing::debug!(listener = name, %peer, %error, "TLS handshake failed")
                    }
                    Err(_) => tracing::debug!(listener = name, %peer, "TLS handshake timed out"),
                }
            });
        }
    });
    receiver
}

/// An axum listener over [`accept`]'s connections.
pub struct TlsListener {
    pub connections: mpsc::Receiver<(TlsConnection, SocketAddr)>,
    pub local: SocketAddr,
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsConnection;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.connections.recv().await {
            Some(connection) => connection,
            // The accept task only ends once this listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(config: TlsConfig) -> TlsError {
        match config.acceptor() {
            Ok(_) => panic!("{config:?} was accepted"),
            Err(error) => error,
        }
    }

    fn config(cert: Option<&str>, key: Option<&str>, listeners: &[&str]) -> TlsConfig {
        TlsConfig {
            cert_file: cert.map(PathBuf::from),
            key_file: key.map(PathBuf::from),
            listeners: listeners.iter().map(|name| name.to_string()).collect(),
        }
    }

    #[test]
    fn bad_settings_are_refused_naming_what_is_wrong() {
        assert!(config(None, None, &[]).acceptor().unwrap().is_none());
        let error = refusal(config(Some("c.pem"), None, &[]));
        assert!(matches!(error, TlsError::Incomplete), "{error}");
        let error = refusal(config(Some("c.pem"), Some("k.pem"), &["http", "udp"]));
        assert_eq!(
            error.to_string(),
            "[tls] listeners: \"udp\" is not one of xray-api, otlp-grpc, otlp-http, http"
        );
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("absent.pem");
        let error = refusal(config(missing.to_str(), Some("k.pem"), &[]));
        assert!(matches!(&error, TlsError::Certificates(path, _) if *path == missing));
        assert!(error.to_string().contains("absent.pem"), "{error}");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let error = refusal(config(empty.to_str(), Some("k.pem"), &[]));
        assert!(matches!(error, TlsError::NoCertificate(_)), "{error}");
    }
}
