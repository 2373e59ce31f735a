//! Transports: anything that moves bytes in order.
//!
//! Any `AsyncRead + AsyncWrite + Send + Unpin + 'static` stream works: a
//! `tokio::net::TcpStream` (tether turns on `TCP_NODELAY` itself), a
//! `tokio::net::UnixStream`, a TLS stream, or the in-memory [`memory`] pair
//! for tests.
//!
//! With the `fault-injection` feature, `fault` wraps any transport in one
//! whose faults (cut, black hole, delay, throttle, corruption) a test scripts
//! at runtime, and runs a TCP proxy that injects them between processes.

use std::any::Any;

use tokio::io::{AsyncRead, AsyncWrite};

#[cfg(feature = "fault-injection")]
pub mod fault;

/// A byte stream a connection can run over.
pub trait Transport: AsyncRead + AsyncWrite + Send + Unpin + 'static {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Transport for T {}

/// Applies per-transport socket options: `TCP_NODELAY` on TCP, since the
/// mux already batches small frames into large writes.
pub(crate) fn tune<T: Transport>(io: &T) {
    if let Some(tcp) = (io as &dyn Any).downcast_ref::<tokio::net::TcpStream>() {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
    }
}

/// An in-memory pair of connected streams, each direction buffering up to
/// `buffer` bytes.
pub fn memory(buffer: usize) -> (tokio::io::DuplexStream, tokio::io::DuplexStream) {
    tokio::io::duplex(buffer)
}
