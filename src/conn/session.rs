//! Sessions outlive transports: a dialing side reconnects after its
//! transport breaks, an accepting side keeps the session for a while, and
//! the two resume where the transport left off. The mux's sequence numbers
//! make it exactly once: each side tells the other how many reliable frames
//! it received, and the other replays the rest.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures::future::BoxFuture;
use uuid::Uuid;

use super::{handshake, ConnectError, Connection, ConnectionError, Shared};
use crate::config::Config;
use crate::transport::{self, Transport};
use crate::NodeId;

/// Makes a new transport to the same peer, for reconnection.
pub(crate) type Dialer = Arc<dyn Fn() -> BoxFuture<'static, std::io::Result<Box<dyn Transport>>> + Send + Sync>;

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

/// The first dial of a connection, within the handshake timeout.
pub(crate) async fn first_dial(dial: &Dialer, cfg: &Config) -> Result<Box<dyn Transport>, ConnectError> {
    let limit = cfg.handshake_timeout;
    Ok(dial_within(dial, limit).await.ok_or(ConnectError::Timeout(limit))??)
}

/// What happens to a connection over its life. Every event is also logged.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum ConnectionEvent {
    /// The transport broke; the session waits to be resumed.
    Disconnected(ConnectionError),
    /// The dialing side tries again after `delay`.
    Reconnecting {
        /// 1 for the first attempt.
        attempt: u32,
        /// The wait before this attempt.
        delay: Duration,
    },
    /// A new transport took over the session: nothing was lost.
    Resumed,
    /// The session cannot be resumed; the connection has ended.
    SessionLost(SessionLost),
}

/// Why a session could not be resumed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SessionLost {
    /// The peer answered with a new identity: it restarted.
    #[error("the peer restarted")]
    PeerRestarted,
    /// The peer no longer has the session (its linger time ran out).
    #[error("the peer no longer has the session")]
    Expired,
    /// Reconnection gave up.
    #[error("reconnection gave up after {attempts} attempts")]
    GaveUp {
        /// Attempts made.
        attempts: u32,
    },
    /// The resume positions do not fit: frames would be lost.
    #[error("resume positions do not match")]
    Mismatch,
}

/// How a broken transport is recovered.
pub(crate) enum Recovery {
    /// Nothing: the connection ends with the transport.
    None,
    /// Dial again and resume.
    Dial(Dialer),
    /// Wait for the dialer to come back, at most this long.
    Linger(Duration),
}

/// A random number in [0, 1), for jitter.
pub(crate) fn unit_random() -> f64 {
    (Uuid::new_v4().as_u64_pair().0 >> 11) as f64 / (1u64 << 53) as f64
}

/// Accepts connections and resumes the sessions of peers that come back.
///
/// Use one acceptor for all transports of a listener: a dialer whose
/// transport broke reconnects to the same listener, and the acceptor hands
/// the new transport to the waiting session.
#[derive(Clone)]
pub struct Acceptor {
    inner: Arc<AcceptorInner>,
}

struct AcceptorInner {
    cfg: Config,
    node_id: NodeId,
    sessions: Mutex<HashMap<Uuid, Weak<Shared>>>,
}

/// What an accepted transport became.
#[derive(Debug)]
#[non_exhaustive]
pub enum Accepted {
    /// A new connection.
    New(Connection),
    /// A session that already existed took the transport over.
    Resumed(Connection),
}

impl std::fmt::Debug for Acceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acceptor").field("node", &self.inner.node_id).finish()
    }
}

impl Acceptor {
    /// An acceptor for connections of this process's node.
    pub fn new(cfg: Config) -> Acceptor {
        Acceptor::for_node(cfg, crate::node_id())
    }

    pub(crate) fn for_node(cfg: Config, node_id: NodeId) -> Acceptor {
        Acceptor { inner: Arc::new(AcceptorInner { cfg, node_id, sessions: Mutex::new(HashMap::new()) }) }
    }

    /// Runs the handshake on `io` as the accepting side: a new connection,
    /// or a known session resumed on this transport.
    pub async fn accept<T: Transport>(&self, io: T) -> Result<Accepted, ConnectError> {
        self.accept_under(io, None).await
    }

    /// [`Acceptor::accept`], with new connections' supervisors linked to `parent`.
    pub(crate) async fn accept_under<T: Transport>(
        &self,
        mut io: T,
        parent: Option<&super::supervisor::Parent>,
    ) -> Result<Accepted, ConnectError> {
        let cfg = &self.inner.cfg;
        cfg.validate()?;
        transport::tune(&io);
        let mut resumed = None;
        let mut told = 0;
        let mut unknown = false;
        let new_session = Uuid::new_v4();
        let peer = handshake::server(&mut io, cfg, self.inner.node_id.0, |hello| {
            let known = self.lookup(hello.session_id, NodeId(hello.node_id));
            match known {
                Some(shared) => {
                    // Our old transport may still deliver frames after
                    // this count goes out; the resumed mux drops the
                    // dialer's second copies of them.
                    let received = shared.lock().mux.received_seq();
                    told = received;
                    resumed = Some(shared);
                    (hello.session_id, received)
                }
                None => {
                    unknown = !hello.session_id.is_nil();
                    (new_session, 0)
                }
            }
        })
        .await
        .inspect_err(|e| tracing::warn!(error = %e, "handshake failed"))?;
        if let Some(shared) = resumed {
            shared.resume(io, peer, told);
            return Ok(Accepted::Resumed(Connection { shared }));
        }
        if unknown {
            // Our answer (another session, maybe another node id) tells the
            // dialer its session is lost. A connection started here would
            // only linger as a phantom peer, refusing the dialer's next
            // connect as a duplicate until the linger ran out.
            tracing::info!(peer = %NodeId(peer.hello.node_id), "resume of an unknown session refused");
            return Err(ConnectError::UnknownSession);
        }
        // Keep the session after a broken transport only for a dialer that
        // said it will come back.
        let recovery = if peer.hello.resumable { Recovery::Linger(cfg.linger) } else { Recovery::None };
        let conn = Connection::start(
            io,
            cfg.clone(),
            super::Side::Server,
            self.inner.node_id,
            new_session,
            peer,
            recovery,
            parent,
        )
        .await;
        let mut sessions = self.inner.sessions.lock().unwrap_or_else(|e| e.into_inner());
        sessions.retain(|_, s| s.upgrade().is_some_and(|s| s.lock().error.is_none()));
        sessions.insert(new_session, Arc::downgrade(&conn.shared));
        Ok(Accepted::New(conn))
    }

    fn lookup(&self, session: Uuid, peer: NodeId) -> Option<Arc<Shared>> {
        if session.is_nil() {
            return None;
        }
        let sessions = self.inner.sessions.lock().unwrap_or_else(|e| e.into_inner());
        let shared = sessions.get(&session)?.upgrade()?;
        let alive = shared.lock().error.is_none();
        (alive && shared.peer_id == peer).then_some(shared)
    }
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
