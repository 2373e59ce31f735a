//! A node's listener: admits incoming transports within its limits, runs
//! their handshakes (TLS first, when configured) and hands new connections
//! to the node.
//!
//! Two limits protect it from floods. `max_connections` bounds everything
//! the listener holds, handshakes included; a transport beyond it is closed
//! at once. `max_handshakes` bounds the transports waiting in their
//! handshake: when one more arrives, the one that has waited longest is
//! dropped. A peer that opens connections and never speaks can therefore
//! hold at most that many slots, and only until newer arrivals push it out,
//! while a real peer finishes its handshake in a round trip or two.

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

use crate::node::{Node, NodeInner};
use crate::transport::{self, Transport};
use crate::{Accepted, ConnectError};

/// How long the accept loop pauses after `accept` fails (out of file
/// descriptors, typically), rather than spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Counts what a listener holds.
struct Gate {
    max_connections: usize,
    max_handshakes: usize,
    /// Transports admitted and not yet released (handshaking or connected).
    live: AtomicUsize,
    waiting: Mutex<Waiting>,
}

/// Transports in their handshake, oldest first; sending on (or dropping)
/// the sender evicts one.
#[derive(Default)]
struct Waiting {
    next: u64,
    queue: VecDeque<(u64, oneshot::Sender<()>)>,
}

/// One admitted transport's claim on the listener's limits; released on drop.
struct Admission {
    gate: Arc<Gate>,
    ticket: u64,
}

impl Gate {
    fn lock(&self) -> std::sync::MutexGuard<'_, Waiting> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Admits one more transport, evicting the longest-waiting handshake if
    /// too many wait; `None` if the listener is full. The receiver fires if
    /// this one is evicted in turn.
    fn admit(self: &Arc<Self>) -> Option<(Admission, oneshot::Receiver<()>)> {
        if self.live.fetch_add(1, Ordering::AcqRel) >= self.max_connections {
            self.live.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        let (evict, evicted) = oneshot::channel();
        let mut w = self.lock();
        let ticket = w.next;
        w.next += 1;
        if w.queue.len() >= self.max_handshakes {
            if let Some((_, oldest)) = w.queue.pop_front() {
                let _ = oldest.send(());
            }
        }
        w.queue.push_back((ticket, evict));
        Some((Admission { gate: self.clone(), ticket }, evicted))
    }
}

impl Admission {
    /// The handshake is over (either way): no longer evictable.
    fn handshake_done(&self) {
        self.gate.lock().queue.retain(|(t, _)| *t != self.ticket);
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.handshake_done();
        self.gate.live.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Accepts on `listener` until the node is dropped, turning each TCP stream
/// into a transport with `upgrade` (identity, or a TLS handshake).
pub(crate) fn spawn<U, Fut, T>(listener: TcpListener, node: Weak<NodeInner>, upgrade: U)
where
    U: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = std::io::Result<T>> + Send + 'static,
    T: Transport,
{
    let Some(inner) = node.upgrade() else { return };
    let cfg = inner.config();
    let gate = Arc::new(Gate {
        max_connections: cfg.max_connections as usize,
        max_handshakes: cfg.max_handshakes as usize,
        live: AtomicUsize::new(0),
        waiting: Mutex::new(Waiting::default()),
    });
    drop(inner);
    let upgrade = Arc::new(upgrade);
    tokio::spawn(async move {
        loop {
            let accepted = listener.accept().await;
            let Some(inner) = node.upgrade() else { break };
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed; pausing");
                    drop(inner);
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            };
            let Some((admission, evicted)) = gate.admit() else {
                tracing::warn!(%peer, limit = gate.max_connections, "incoming connection refused: listener full");
                continue;
            };
            tokio::spawn(handle(inner, stream, peer, upgrade.clone(), admission, evicted));
        }
    });
}

/// Runs one incoming transport's handshakes; a new connection keeps its
/// admission until it ends.
async fn handle<U, Fut, T>(
    inner: Arc<NodeInner>,
    stream: TcpStream,
    peer: SocketAddr,
    upgrade: Arc<U>,
    admission: Admission,
    evicted: oneshot::Receiver<()>,
) where
    U: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = std::io::Result<T>> + Send + 'static,
    T: Transport,
{
    transport::tune(&stream);
    let limit = inner.config().handshake_timeout;
    let handshake = async {
        let io = tokio::time::timeout(limit, upgrade(stream))
            .await
            .map_err(|_| ConnectError::Timeout(limit))?
            .map_err(ConnectError::from)?;
        let parent = inner.supervisor().await.cloned();
        inner.acceptor().accept_under(io, parent.as_ref()).await
    };
    let outcome = tokio::select! {
        outcome = handshake => outcome,
        _ = evicted => {
            tracing::info!(%peer, "handshake dropped: newer connections are waiting");
            return;
        }
    };
    admission.handshake_done();
    match outcome {
        Ok(Accepted::New(conn)) => {
            let mut ended = conn.ended();
            let _ = Node::from_inner(inner).attach(conn, None);
            let _ = ended.wait_for(|e| *e).await;
            drop(admission);
        }
        Ok(_) => tracing::debug!(%peer, "session resumed on a new transport"),
        Err(e) => tracing::info!(%peer, error = %e, "incoming connection refused"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(max_connections: usize, max_handshakes: usize) -> Arc<Gate> {
        Arc::new(Gate { max_connections, max_handshakes, live: AtomicUsize::new(0), waiting: Mutex::default() })
    }

    #[test]
    fn the_oldest_handshake_is_evicted_and_full_listeners_refuse() {
        let g = gate(5, 2);
        let (a, mut a_evicted) = g.admit().unwrap();
        let (b, mut b_evicted) = g.admit().unwrap();
        assert!(a_evicted.try_recv().is_err() && b_evicted.try_recv().is_err());
        let (_c, mut c_evicted) = g.admit().unwrap();
        assert_eq!(a_evicted.try_recv(), Ok(()), "the oldest waiting handshake goes");
        assert!(b_evicted.try_recv().is_err());
        // A finished handshake is no longer evictable, but still counts.
        b.handshake_done();
        let (_d, _) = g.admit().unwrap();
        assert!(c_evicted.try_recv().is_err(), "c and d wait: room for two");
        let (_e, _) = g.admit().unwrap();
        assert_eq!(c_evicted.try_recv(), Ok(()), "c is now the oldest waiting");
        assert_ne!(b_evicted.try_recv(), Ok(()), "b finished, so it was never evicted");
        assert!(g.admit().is_none(), "five admitted (the evicted one not yet released): full");
        drop(a);
        assert!(g.admit().is_some(), "a released admission frees its slot");
        assert_eq!(g.live.load(Ordering::Acquire), 4, "the probe's admission was released when dropped");
    }
}
