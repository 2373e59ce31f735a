//! [`Acceptor`]: accepts connections and hands a returning dialer's new
//! transport to the session it left.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use uuid::Uuid;

use super::connection::Connection;
use super::error::ConnectError;
use super::handshake;
use super::shared::Shared;
use super::supervisor::{Args, Parent, SupervisorMsg};
use crate::config::{Config, ConfigError};
use crate::mux::Side;
use crate::transport::{self, Transport};
use crate::NodeId;

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
    /// Sessions a dialer may come back to. Pruned of ended ones whenever
    /// one is added, so it holds at most the live connections and those
    /// that ended since the last accept.
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
    ///
    /// # Errors
    ///
    /// The configuration is checked here, once ([`Config::validate`]).
    pub fn new(cfg: Config) -> Result<Acceptor, ConfigError> {
        cfg.validate()?;
        Ok(Acceptor::for_node(cfg, crate::node_id()))
    }

    /// An acceptor for a node's connections; `cfg` was validated by the node.
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
        parent: Option<&Parent>,
    ) -> Result<Accepted, ConnectError> {
        let cfg = &self.inner.cfg;
        transport::tune(&io);
        let addr = transport::peer_addr(&io);
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
        .inspect_err(|e| tracing::warn!(addr = addr.as_deref().unwrap_or("?"), error = %e, "handshake failed"))?;
        if let Some(shared) = resumed {
            if let Some(generation) = shared.resume(io, peer, told) {
                // Without a supervisor the connection has ended: the
                // new transport's driver finds it so.
                let _ = shared.supervise(SupervisorMsg::Resumed { generation });
            }
            return Ok(Accepted::Resumed(Connection::hold(shared)));
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
        let recover = if peer.hello.resumable { Args::Linger(cfg.linger) } else { Args::None };
        let conn = Connection::start(
            io,
            cfg.clone(),
            Side::Server,
            self.inner.node_id,
            new_session,
            peer,
            recover,
            parent,
            addr,
        )
        .await;
        let mut sessions = self.inner.sessions.lock().unwrap_or_else(|e| e.into_inner());
        sessions.retain(|_, s| s.upgrade().is_some_and(|s| s.lock().error.is_none()));
        sessions.insert(new_session, Arc::downgrade(conn.shared()));
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
