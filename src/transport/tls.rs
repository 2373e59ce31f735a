//! TLS over TCP with rustls (feature `tls`).
//!
//! Build a `rustls::ServerConfig` (with a client certificate verifier for
//! mutual TLS) and a `rustls::ClientConfig` (with the roots that sign the
//! server's certificate, and a client certificate for mutual TLS), then use
//! [`Node::listen_tls`](crate::Node::listen_tls) and
//! [`Node::connect_tls`](crate::Node::connect_tls). The `rustls` here is the
//! one tether links (ring crypto); `examples/tls.rs` shows a whole setup.
//!
//! TLS authenticates hosts and encrypts; a [`Cookie`](crate::Cookie) still
//! decides, inside it, whether the peer belongs to the cluster. Use both on
//! untrusted networks.

pub use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::{client, server};
/// For TLS streams set up by hand and handed to
/// [`Node::connect_with`](crate::Node::connect_with) or
/// [`Connection`](crate::Connection) (tether sets `TCP_NODELAY` under them).
pub use tokio_rustls::{TlsAcceptor, TlsConnector};

use tokio::net::TcpStream;

use super::TlsFailure;

/// Parses the name the server's certificate must be valid for; a bad one is
/// a TLS failure (see [`TlsFailure`]).
pub(crate) fn server_name(name: &str) -> std::io::Result<ServerName<'static>> {
    ServerName::try_from(name.to_owned()).map_err(|e| {
        TlsFailure::wrap(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("bad server name {name:?}: {e}"),
        ))
    })
}

/// Dials `addr` and runs the client side of TLS. The caller bounds the
/// time, as it bounds every dial (`Config::handshake_timeout`).
pub(crate) async fn connect(
    connector: TlsConnector,
    name: ServerName<'static>,
    addr: String,
) -> std::io::Result<client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    // Tuned now, so that the TLS handshake runs with NODELAY too.
    super::tune(&tcp);
    connector.connect(name, tcp).await.map_err(TlsFailure::wrap)
}

/// Runs the server side of TLS on an accepted stream (already tuned; the
/// listener bounds the time).
pub(crate) async fn accept(acceptor: TlsAcceptor, tcp: TcpStream) -> std::io::Result<server::TlsStream<TcpStream>> {
    acceptor.accept(tcp).await.map_err(TlsFailure::wrap)
}
