//! Transports: anything that moves bytes in order.
//!
//! Any `AsyncRead + AsyncWrite + Send + Unpin + 'static` stream works: a
//! `tokio::net::TcpStream` (tether turns on `TCP_NODELAY` itself), a
//! `tokio::net::UnixStream`, a TLS stream, or the in-memory [`memory`] pair
//! for tests.
//!
//! With the `tls` feature, `Node::listen_tls` and `Node::connect_tls` run
//! TLS (or mutual TLS)
//! under the node protocol; `tls` re-exports the `rustls` they take.
//!
//! With the `fault-injection` feature, `fault` wraps any transport in one
//! whose faults (cut, black hole, delay, throttle, corruption) a test scripts
//! at runtime, and runs a TCP proxy that injects them between processes.
//!
//! - `mod.rs`: the [`Transport`] trait, socket tuning (`TCP_NODELAY`), the
//!   marker that tells a TLS failure from a plain I/O error, and [`memory`].
//! - `tls.rs`: dialing and accepting TLS for the node (feature `tls`).
//! - `fault.rs`: the fault-injecting wrapper and proxy (feature
//!   `fault-injection`).

use std::any::Any;

use tokio::io::{AsyncRead, AsyncWrite};

#[cfg(feature = "fault-injection")]
pub mod fault;
#[cfg(feature = "tls")]
pub mod tls;

/// A byte stream a connection can run over.
pub trait Transport: AsyncRead + AsyncWrite + Send + Unpin + 'static {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Transport for T {}

/// Applies per-transport socket options: `TCP_NODELAY` on TCP (bare, or
/// under tokio-rustls's TLS streams), since the mux already batches small
/// frames into large writes.
pub(crate) fn tune<T: Transport>(io: &T) {
    if let Some(tcp) = tcp_of(io) {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
    }
}

/// The TCP stream under `io`, bare or under tokio-rustls's TLS streams.
fn tcp_of<T: Transport>(io: &T) -> Option<&tokio::net::TcpStream> {
    let io = io as &dyn Any;
    let tcp = io.downcast_ref::<tokio::net::TcpStream>();
    #[cfg(feature = "tls")]
    let tcp = tcp
        .or_else(|| io.downcast_ref::<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>().map(|s| s.get_ref().0))
        .or_else(|| io.downcast_ref::<tokio_rustls::server::TlsStream<tokio::net::TcpStream>>().map(|s| s.get_ref().0));
    tcp
}

/// The far end's address, for logs: TCP and Unix sockets, bare or under
/// TLS; `None` for any other transport.
pub(crate) fn peer_addr<T: Transport>(io: &T) -> Option<String> {
    if let Some(tcp) = tcp_of(io) {
        return tcp.peer_addr().ok().map(|a| a.to_string());
    }
    #[cfg(unix)]
    if let Some(unix) = (io as &dyn Any).downcast_ref::<tokio::net::UnixStream>() {
        let addr = unix.peer_addr().ok()?;
        return Some(match addr.as_pathname() {
            Some(path) => path.display().to_string(),
            None => "unix".to_owned(),
        });
    }
    None
}

/// Carried inside an `io::Error` from a transport's setup: the TLS handshake
/// failed, so [`ConnectError::Tls`](crate::ConnectError::Tls) is reported
/// rather than a plain I/O error.
#[derive(Debug)]
pub(crate) struct TlsFailure(std::io::Error);

impl std::fmt::Display for TlsFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for TlsFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

impl TlsFailure {
    /// Marks `e` as a TLS handshake failure.
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    pub(crate) fn wrap(e: std::io::Error) -> std::io::Error {
        std::io::Error::new(e.kind(), TlsFailure(e))
    }

    /// The TLS failure inside `e`, or `e` itself if it is none. An error
    /// rustls raised later (an alert refusing our certificate arrives after
    /// TLS 1.3's handshake, at the first read) counts as one too.
    pub(crate) fn unwrap(e: std::io::Error) -> Result<std::io::Error, std::io::Error> {
        #[cfg(feature = "tls")]
        if e.get_ref().is_some_and(|inner| inner.is::<tls::rustls::Error>()) {
            return Ok(e);
        }
        if !e.get_ref().is_some_and(|inner| inner.is::<TlsFailure>()) {
            return Err(e);
        }
        let inner = e.into_inner().expect("checked above");
        Ok(inner.downcast::<TlsFailure>().map(|t| t.0).expect("checked above"))
    }
}

/// An in-memory pair of connected streams, each direction buffering up to
/// `buffer` bytes.
pub fn memory(buffer: usize) -> (tokio::io::DuplexStream, tokio::io::DuplexStream) {
    tokio::io::duplex(buffer)
}
