//! Dialing: how a dialing side makes (and, to resume, remakes) its
//! transport, each attempt bounded in time.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use super::error::ConnectError;
use crate::transport::{self, Transport};

/// Makes a new transport to the same peer, for reconnection.
pub(crate) type Dialer = Arc<dyn Fn() -> BoxFuture<'static, std::io::Result<Box<dyn Transport>>> + Send + Sync>;

/// Boxes a dial function as a [`Dialer`].
pub(crate) fn dialer<F, Fut, T>(dial: F) -> Dialer
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = std::io::Result<T>> + Send + 'static,
    T: Transport,
{
    Arc::new(move || {
        let fut = dial();
        Box::pin(async move {
            // Tuned while its concrete type is known: once boxed, a TCP
            // stream can no longer be recognised (and would miss NODELAY).
            fut.await.map(|io| {
                transport::tune(&io);
                Box::new(io) as Box<dyn Transport>
            })
        })
    })
}

/// Dials with `limit`: a peer that never answers (its host down, SYNs
/// dropped) fails the attempt in time, not after the operating system's
/// own connect timeout, which is minutes. `None` when the time ran out.
pub(crate) async fn dial_within(dial: &Dialer, limit: Duration) -> Option<std::io::Result<Box<dyn Transport>>> {
    tokio::time::timeout(limit, dial()).await.ok()
}

/// The first dial of a connection, within `limit`.
pub(crate) async fn first_dial(dial: &Dialer, limit: Duration) -> Result<Box<dyn Transport>, ConnectError> {
    Ok(dial_within(dial, limit).await.ok_or(ConnectError::Timeout(limit))??)
}

#[cfg(test)]
mod tests {
    use super::dialer;

    /// A dialed TCP stream is boxed for reconnection; it must be tuned
    /// (TCP_NODELAY) before, while its type is still known. Without it,
    /// small messages sat in Nagle's buffer waiting for delayed ACKs.
    #[tokio::test]
    async fn dialed_tcp_streams_get_nodelay() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (probe_tx, probe_rx) = std::sync::mpsc::channel();
        let dial = dialer(move || {
            let probe_tx = probe_tx.clone();
            async move {
                let stream = std::net::TcpStream::connect(addr)?;
                // The clone shares the socket, so it sees its options.
                probe_tx.send(stream.try_clone()?).unwrap();
                stream.set_nonblocking(true)?;
                tokio::net::TcpStream::from_std(stream)
            }
        });
        let _io = dial().await.unwrap();
        let probe = probe_rx.recv().unwrap();
        assert!(probe.nodelay().unwrap(), "TCP_NODELAY is set on a dialed stream");
    }
}
