//! A node: an identity, its connections to peers (one per peer node), and
//! the registry of actors it exports.

use std::any::Any;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};

use crate::auth::{CapabilityKey, Token};
use crate::chan::{mpsc, oneshot, RawSender};
use crate::conn::Side;
use crate::remote_ref::{ActorId, AnyRoute, Local, Mailbox, RemoteMessage, RemoteRef, Route, Tracker, WatchEvent};
use crate::transport::Transport;
use crate::{Config, ConnectError, Connection, NodeId};

/// Why a remote operation could not reach its actor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum RemoteError {
    /// No actor is exported under this name.
    #[error("no actor named {0:?}")]
    NotFound(String),
    /// The actor takes another message type than the one asked for.
    #[error("type mismatch: asked for {expected}, the actor takes {found}")]
    TypeMismatch {
        /// The type this side asked for.
        expected: String,
        /// The type the actor takes.
        found: String,
    },
    /// The actor has stopped (or never existed under that id).
    #[error("actor stopped")]
    Stopped,
    /// The ref is not a capability for the actor: its token was not minted
    /// by the owner (a guessed or altered id). The actor received nothing.
    #[error("forbidden: the ref was not issued by the actor's node")]
    Forbidden,
    /// There is no connection to the node, nor to a node that could forward.
    #[error("no route to node {0}")]
    NoRoute(NodeId),
    /// The node's connection was lost.
    #[error("node {0} lost")]
    NodeLost(NodeId),
    /// The node restarted with a new identity; its old actors are gone.
    #[error("node {0} restarted")]
    NodeRestarted(NodeId),
    /// The peer did not answer in time.
    #[error("peer did not answer within {0:?}")]
    Timeout(Duration),
    /// This side's node was dropped.
    #[error("local node is gone")]
    NodeGone,
}

/// Why `lookup` failed. Lookups report type mismatches at once, never as a
/// garbled decode later.
pub type LookupError = RemoteError;

/// A name already used by another export.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("an actor is already exported as {0:?}")]
pub struct NameTaken(pub String);

/// What nodes say to each other on the root channel of a connection.
#[derive(Serialize, Deserialize)]
enum Control {
    Hello {
        name: Option<String>,
    },
    Lookup {
        name: String,
        reply: oneshot::Sender<Result<Exported, RemoteError>>,
    },
    /// Open a mailbox route to `target`; `reply` is a
    /// `oneshot::Sender<Result<mpsc::Sender<M>, RemoteError>>` whose `M` only
    /// the owner's registry knows. Forwarded hop by hop to the owner.
    Open {
        target: ActorId,
        token: Token,
        type_name: String,
        reply: RawSender,
    },
    /// Tell `stopped` when `target` stops (or at once why not). Forwarded
    /// like `Open`.
    Watch {
        target: ActorId,
        token: Token,
        stopped: Watcher,
    },
}

#[derive(Serialize, Deserialize)]
struct Exported {
    actor: u64,
    token: Token,
    type_name: String,
}

/// Told `Ok` when the watched actor stops, or an error at once.
type Watcher = oneshot::Sender<Result<(), RemoteError>>;

/// An exported actor.
struct Export {
    type_name: &'static str,
    /// The `Arc<dyn Mailbox<M>>`, for refs to it that come back here.
    mailbox: Arc<dyn Any + Send + Sync>,
    /// The tasks feeding the actor from its routes; `None` once the actor
    /// stopped (its routes are closed, and no new one opens).
    pumps: Mutex<Option<Vec<tokio::task::JoinHandle<()>>>>,
    /// Answers an `Open` with a fresh sender into the actor's mailbox.
    open: Box<dyn Fn(RawSender) + Send + Sync>,
    /// Watchers to tell when the actor stops.
    watchers: Mutex<Vec<Watcher>>,
}

impl Drop for Export {
    /// Pumps still running (the node went away with the actor alive) stop
    /// too, releasing the mailbox they hold.
    fn drop(&mut self) {
        let pumps = self.pumps.get_mut().unwrap_or_else(|e| e.into_inner());
        for p in pumps.take().into_iter().flatten() {
            p.abort();
        }
    }
}

#[derive(Clone)]
struct Peer {
    conn: Connection,
    control: mpsc::Sender<Control>,
}

#[derive(Default)]
struct NodeState {
    peers: HashMap<NodeId, Peer>,
    /// Which node answered at a dialed address, to recognise restarts.
    dialed: HashMap<String, NodeId>,
    exports: HashMap<u64, Arc<Export>>,
    names: HashMap<String, u64>,
    /// Keyed by token too: a forged ref must not share a real one's route.
    routes: HashMap<(ActorId, Token), AnyRoute>,
    lost: HashSet<NodeId>,
    restarted: HashSet<NodeId>,
    /// Names peers gave in their hello, to recognise a restarted node that
    /// comes back at another address.
    named: HashMap<String, NodeId>,
    /// Permits for the asks waiting on each peer node
    /// (`Config::max_pending_asks` each).
    asks: HashMap<NodeId, Arc<tokio::sync::Semaphore>>,
}

pub(crate) struct NodeInner {
    id: NodeId,
    name: Option<String>,
    cfg: Config,
    /// Mints and checks the capability tokens of this node's actors.
    caps: CapabilityKey,
    /// Takes incoming transports: new peers, or sessions coming back.
    acceptor: crate::Acceptor,
    state: Mutex<NodeState>,
    /// The node's actor, parent of its connections' supervisors; spawned on
    /// first use (a node can be made outside a runtime).
    supervisor: tokio::sync::OnceCell<Option<crate::conn::SupervisorParent>>,
}

impl NodeInner {
    pub(crate) async fn supervisor(&self) -> Option<&crate::conn::SupervisorParent> {
        self.supervisor.get_or_init(crate::conn::NodeSupervisor::start).await.as_ref()
    }

    pub(crate) fn config(&self) -> &Config {
        &self.cfg
    }

    pub(crate) fn acceptor(&self) -> &crate::Acceptor {
        &self.acceptor
    }
}

impl Drop for NodeInner {
    fn drop(&mut self) {
        if let Some(Some(parent)) = self.supervisor.get() {
            parent.stop();
        }
    }
}

/// A tether node: the unit of identity. Cloning is cheap.
///
/// A process normally has one. Its [`NodeId`] is drawn at start, so a
/// restarted process is a new node; peers notice and report
/// [`WatchEvent::NodeRestarted`] for refs to the old one.
#[derive(Clone)]
pub struct Node {
    inner: Arc<NodeInner>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node").field("id", &self.inner.id).field("name", &self.inner.name).finish()
    }
}

impl Default for Node {
    fn default() -> Self {
        Node::new(None, Config::default())
    }
}

impl Node {
    /// A node with an optional human-readable name and a connection
    /// configuration used for every connection it makes or accepts.
    pub fn new(name: Option<&str>, cfg: Config) -> Node {
        let id = NodeId(uuid::Uuid::new_v4());
        Node {
            inner: Arc::new(NodeInner {
                id,
                name: name.map(str::to_owned),
                acceptor: crate::Acceptor::for_node(cfg.clone(), id),
                cfg,
                caps: CapabilityKey::new(),
                state: Mutex::new(NodeState::default()),
                supervisor: tokio::sync::OnceCell::new(),
            }),
        }
    }

    /// This node's identity.
    pub fn id(&self) -> NodeId {
        self.inner.id
    }

    /// This node's name, if it has one.
    pub fn name(&self) -> Option<&str> {
        self.inner.name.as_deref()
    }

    pub(crate) fn from_inner(inner: Arc<NodeInner>) -> Node {
        Node { inner }
    }

    /// Accepts TCP connections on `addr` until the node is dropped. Returns
    /// the bound address (useful with port 0).
    ///
    /// At most [`Config::max_connections`] are held at once, and at most
    /// [`Config::max_handshakes`] wait in their handshake (when more come,
    /// the oldest from the busiest source address is dropped), each
    /// handshake bounded by [`Config::handshake_timeout`].
    pub async fn listen(&self, addr: impl ToSocketAddrs) -> std::io::Result<std::net::SocketAddr> {
        let listener = TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        crate::listener::spawn(listener, Arc::downgrade(&self.inner), |stream| std::future::ready(Ok(stream)));
        Ok(local)
    }

    /// [`Node::listen`] over TLS: every incoming connection first completes
    /// a TLS handshake with `tls` (which may require client certificates:
    /// mutual TLS), then tether's own; [`Config::handshake_timeout`] bounds
    /// the two together, and [`Config::max_handshakes`] counts both.
    #[cfg(feature = "tls")]
    pub async fn listen_tls(
        &self,
        addr: impl ToSocketAddrs,
        tls: Arc<crate::transport::tls::rustls::ServerConfig>,
    ) -> std::io::Result<std::net::SocketAddr> {
        let listener = TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        crate::listener::spawn(listener, Arc::downgrade(&self.inner), move |stream| {
            crate::transport::tls::accept(acceptor.clone(), stream)
        });
        Ok(local)
    }

    /// Connects to the node listening at `addr`, or returns the existing
    /// connection if this node already has one to the node there.
    /// [`Config::handshake_timeout`] bounds the TCP connect (here and on
    /// each reconnection), and tether's handshake after it.
    pub async fn connect(&self, addr: &str) -> Result<NodeId, ConnectError> {
        let target = addr.to_owned();
        self.connect_dialer(addr, crate::conn::dialer(move || TcpStream::connect(target.clone()))).await
    }

    /// [`Node::connect`] over TLS: the server's certificate must be valid
    /// for `server_name` under `tls`'s roots (and `tls` may carry a client
    /// certificate, for mutual TLS). Reconnections dial TLS again. The TCP
    /// connection and the TLS handshake together are bounded by
    /// [`Config::handshake_timeout`], and tether's handshake after them too.
    #[cfg(feature = "tls")]
    pub async fn connect_tls(
        &self,
        addr: &str,
        server_name: &str,
        tls: Arc<crate::transport::tls::rustls::ClientConfig>,
    ) -> Result<NodeId, ConnectError> {
        let name = crate::transport::tls::server_name(server_name)?;
        let connector = tokio_rustls::TlsConnector::from(tls);
        let target = addr.to_owned();
        let dial = crate::conn::dialer(move || {
            crate::transport::tls::connect(connector.clone(), name.clone(), target.clone())
        });
        self.connect_dialer(addr, dial).await
    }

    async fn connect_dialer(&self, addr: &str, dial: crate::conn::Dialer) -> Result<NodeId, ConnectError> {
        if let Some(id) = self.live_at(addr) {
            return Ok(id);
        }
        // The session survives broken transports: the same address is dialed
        // again and the session resumed (see `Config::reconnect`).
        let parent = self.inner.supervisor().await;
        let conn = Connection::dial_as(dial, self.inner.cfg.clone(), self.inner.id, parent).await?;
        let (id, ready) = self.attach(conn, Some(addr.to_owned()));
        self.await_hello(ready).await?;
        Ok(id)
    }

    /// Waits until the peer has taken the connection in (its hello came),
    /// so that it can be asked things at once.
    async fn await_hello(&self, ready: Option<tokio::sync::oneshot::Receiver<()>>) -> Result<(), ConnectError> {
        let Some(ready) = ready else { return Ok(()) };
        let limit = self.inner.cfg.handshake_timeout;
        match tokio::time::timeout(limit, ready).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(ConnectError::Eof),
            Err(_) => Err(ConnectError::Timeout(limit)),
        }
    }

    /// Runs the node protocol over a connection made by other means (Unix
    /// socket, TLS, memory), as the dialing side when `dial` is true.
    pub async fn connect_with<T: Transport>(&self, io: T, dial: bool) -> Result<NodeId, ConnectError> {
        let side = if dial { Side::Client } else { Side::Server };
        let parent = self.inner.supervisor().await;
        let conn = Connection::establish(io, self.inner.cfg.clone(), side, self.inner.id, parent).await?;
        let (id, ready) = self.attach(conn, None);
        self.await_hello(ready).await?;
        Ok(id)
    }

    fn live_at(&self, addr: &str) -> Option<NodeId> {
        let st = self.inner.lock();
        let id = *st.dialed.get(addr)?;
        let peer = st.peers.get(&id)?;
        peer.conn.error().is_none().then_some(id)
    }

    /// Takes a fresh connection into the node: one connection per peer node.
    /// Returns the peer and, for a new link, a signal that its hello came.
    pub(crate) fn attach(
        &self,
        conn: Connection,
        dialed: Option<String>,
    ) -> (NodeId, Option<tokio::sync::oneshot::Receiver<()>>) {
        let peer_id = conn.peer_id();
        let _ = conn.shared().node.set(Arc::downgrade(&self.inner));
        let (control, incoming) = conn.root::<Control, Control>().expect("a fresh connection has its root channel");
        {
            let mut st = self.inner.lock();
            if let Some(addr) = dialed {
                if let Some(old) = st.dialed.insert(addr, peer_id) {
                    if old != peer_id {
                        tracing::info!(old = %old, new = %peer_id, "node at this address restarted");
                        st.restarted.insert(old);
                    }
                }
            }
            if let Some(existing) = st.peers.get(&peer_id) {
                if existing.conn.error().is_none() {
                    // Already connected to that node: keep the first link.
                    tracing::debug!(peer = %peer_id, "duplicate connection closed");
                    let dup = conn.clone();
                    tokio::spawn(async move { dup.close().await });
                    return (peer_id, None);
                }
            }
            st.lost.remove(&peer_id);
            st.peers.insert(peer_id, Peer { conn: conn.clone(), control: control.clone() });
        }
        let hello = Control::Hello { name: self.inner.name.clone() };
        let _ = control.try_send(hello);
        let node = Arc::downgrade(&self.inner);
        let (hello_tx, hello_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(serve(node, peer_id, conn, incoming, hello_tx));
        (peer_id, Some(hello_rx))
    }

    /// Exports an actor, by name if `name` is given. The returned ref can be
    /// sent to peers; `lookup` finds named exports.
    pub fn export<M: RemoteMessage>(
        &self,
        name: Option<&str>,
        mailbox: impl Mailbox<M>,
    ) -> Result<RemoteRef<M>, NameTaken> {
        let mailbox: Arc<dyn Mailbox<M>> = Arc::new(mailbox);
        let id = loop {
            let id = rand_u64();
            if !self.inner.lock().exports.contains_key(&id) {
                break id;
            }
        };
        let target = ActorId { node: self.inner.id, id };
        let token = self.inner.caps.token(id);
        let export = Arc::new_cyclic(|this: &Weak<Export>| {
            let this = this.clone();
            let mb = mailbox.clone();
            Export {
                type_name: std::any::type_name::<M>(),
                mailbox: Arc::new(mailbox.clone()),
                open: Box::new(move |raw: RawSender| {
                    let Some(reply) = raw.into_oneshot::<Result<mpsc::Sender<M>, RemoteError>>() else { return };
                    let Some(export) = this.upgrade() else {
                        let _ = reply.send(Err(RemoteError::Stopped));
                        return;
                    };
                    let mut guard = export.pumps.lock().unwrap_or_else(|e| e.into_inner());
                    let Some(pumps) = guard.as_mut() else {
                        drop(guard);
                        let _ = reply.send(Err(RemoteError::Stopped));
                        return;
                    };
                    let (tx, rx) = mpsc::channel::<M>(64);
                    let pump = tokio::spawn(pump(rx, mb.clone()));
                    pumps.retain(|p| !p.is_finished());
                    pumps.push(pump);
                    drop(guard);
                    let _ = reply.send(Ok(tx));
                }),
                watchers: Mutex::new(Vec::new()),
                pumps: Mutex::new(Some(Vec::new())),
            }
        });
        {
            let mut st = self.inner.lock();
            if let Some(name) = name {
                if st.names.contains_key(name) {
                    return Err(NameTaken(name.to_owned()));
                }
                st.names.insert(name.to_owned(), id);
            }
            st.exports.insert(id, export);
        }
        let stopped = mailbox.stopped();
        let node = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            stopped.await;
            if let Some(node) = node.upgrade() {
                node.actor_stopped(id);
            }
        });
        let route = Arc::new(Route {
            node: Arc::downgrade(&self.inner),
            target,
            token,
            via: None,
            local: Some(Local::new(mailbox)),
            sender: tokio::sync::Mutex::new(None),
            ready: Mutex::new(None),
            forbidden: false.into(),
        });
        self.inner.lock().routes.insert((target, token), Arc::downgrade(&route) as AnyRoute);
        Ok(RemoteRef { route })
    }

    /// Removes a name; refs already handed out keep working.
    pub fn unexport(&self, name: &str) -> bool {
        self.inner.lock().names.remove(name).is_some()
    }

    /// Finds the actor exported as `name` on the connected node `peer`,
    /// checking that it takes messages of type `M`.
    pub async fn lookup<M: RemoteMessage>(&self, peer: NodeId, name: &str) -> Result<RemoteRef<M>, LookupError> {
        let control = self.inner.peer(peer)?.control;
        let (reply, answer) = oneshot::channel();
        control
            .send(Control::Lookup { name: name.to_owned(), reply })
            .await
            .map_err(|_| self.inner.why_unreachable(peer))?;
        let exported = self.inner.answer(answer).await??;
        let expected = std::any::type_name::<M>();
        if exported.type_name != expected {
            return Err(RemoteError::TypeMismatch { expected: expected.to_owned(), found: exported.type_name });
        }
        let target = ActorId { node: peer, id: exported.actor };
        let route = self.inner.route::<M>(target, exported.token, Some(peer));
        // Open now, so the first tell (and try_tell) need not wait.
        route.sender().await?;
        Ok(RemoteRef { route })
    }

    /// Nodes this node has a live connection to.
    pub fn peers(&self) -> Vec<NodeId> {
        self.inner.lock().peers.iter().filter(|(_, p)| p.conn.error().is_none()).map(|(id, _)| *id).collect()
    }

    /// The connection to `peer`, if there is one.
    pub fn connection(&self, peer: NodeId) -> Option<Connection> {
        self.inner.lock().peers.get(&peer).map(|p| p.conn.clone())
    }
}

/// Whether `conn` ended because reconnection found the peer restarted.
fn restarted(conn: &Connection) -> bool {
    matches!(conn.error(), Some(crate::ConnectionError::SessionLost(crate::SessionLost::PeerRestarted)))
}

/// Hands one route's messages to a local actor, in order, paced by a
/// [`Tracker`]: while the actor has not handled the last tracked message,
/// the pump reads no more, so the route's window fills and pushes back on
/// the senders. Ends when the route closes, when the actor refuses a
/// message, or when `actor_stopped` aborts it.
async fn pump<M: RemoteMessage>(mut rx: mpsc::Receiver<M>, mb: Arc<dyn Mailbox<M>>) {
    let mut tracker = Tracker::default();
    loop {
        let msg = match rx.recv().await {
            Ok(Some(msg)) => msg,
            Ok(None) | Err(crate::RecvError::Connection(_)) => break,
            Err(e) => {
                tracing::warn!(error = %e, "message for a local actor dropped");
                continue;
            }
        };
        let len = rx.last_len();
        if let Some(handled) = tracker.wait_before(len) {
            handled.await;
        }
        if tracker.deliver(&*mb, msg, len).is_err() {
            break;
        }
    }
}

fn rand_u64() -> u64 {
    let (hi, lo) = uuid::Uuid::new_v4().as_u64_pair();
    hi ^ lo
}

/// Serves one peer's control messages until its connection ends.
async fn serve(
    node: Weak<NodeInner>,
    peer: NodeId,
    conn: Connection,
    mut incoming: mpsc::Receiver<Control>,
    hello: tokio::sync::oneshot::Sender<()>,
) {
    let mut hello = Some(hello);
    loop {
        let msg = match incoming.recv().await {
            Ok(Some(msg)) => msg,
            Ok(None) | Err(crate::RecvError::Connection(_)) => break,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "bad control message");
                continue;
            }
        };
        let is_hello = matches!(msg, Control::Hello { .. });
        let Some(node) = node.upgrade() else { return };
        node.handle(peer, msg);
        // Only once the hello is handled (a restart of a named peer noted),
        // so that `connect` returns to a node that already knows.
        if is_hello {
            if let Some(h) = hello.take() {
                let _ = h.send(());
            }
        }
    }
    if let Some(node) = node.upgrade() {
        node.peer_lost(peer, &conn);
    }
}

impl NodeInner {
    fn lock(&self) -> MutexGuard<'_, NodeState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn peer(&self, id: NodeId) -> Result<Peer, RemoteError> {
        let peer = self.lock().peers.get(&id).cloned();
        match peer {
            Some(p) if p.conn.error().is_none() => Ok(p),
            _ => Err(self.why_unreachable(id)),
        }
    }

    pub(crate) fn why_unreachable(&self, id: NodeId) -> RemoteError {
        let st = self.lock();
        let dead_link = st.peers.get(&id).is_some_and(|p| p.conn.error().is_some());
        if st.restarted.contains(&id) || st.peers.get(&id).is_some_and(|p| restarted(&p.conn)) {
            RemoteError::NodeRestarted(id)
        } else if st.lost.contains(&id) || dead_link {
            RemoteError::NodeLost(id)
        } else {
            RemoteError::NoRoute(id)
        }
    }

    /// Why a route to an actor on `node` closed: the actor stopped if the
    /// node is still connected, else whatever happened to the node.
    pub(crate) fn why_closed(&self, node: NodeId) -> RemoteError {
        if node == self.id || self.peer(node).is_ok() {
            RemoteError::Stopped
        } else {
            self.why_unreachable(node)
        }
    }

    /// Waits for a peer's answer, bounded by the handshake timeout.
    async fn answer<T: RemoteMessage>(&self, rx: oneshot::Receiver<T>) -> Result<T, RemoteError> {
        let limit = self.cfg.handshake_timeout;
        match tokio::time::timeout(limit, rx).await {
            Err(_) => Err(RemoteError::Timeout(limit)),
            Ok(Ok(v)) => Ok(v),
            Ok(Err(_)) => Err(RemoteError::Stopped),
        }
    }

    fn handle(&self, from: NodeId, msg: Control) {
        match msg {
            Control::Hello { name } => {
                tracing::debug!(peer = %from, ?name, "peer said hello");
                if let Some(name) = name {
                    let mut st = self.lock();
                    if let Some(old) = st.named.insert(name, from) {
                        // Two live nodes may share a name by mistake; only a
                        // gone one can have restarted.
                        let old_alive = st.peers.get(&old).is_some_and(|p| p.conn.error().is_none());
                        if old != from && !old_alive {
                            tracing::info!(old = %old, new = %from, "named node restarted");
                            st.restarted.insert(old);
                        }
                    }
                }
            }
            Control::Lookup { name, reply } => {
                let st = self.lock();
                let found = st.names.get(&name).and_then(|id| st.exports.get(id).map(|e| (*id, e.type_name)));
                drop(st);
                let answer = match found {
                    Some((actor, type_name)) => {
                        Ok(Exported { actor, token: self.caps.token(actor), type_name: type_name.to_owned() })
                    }
                    None => Err(RemoteError::NotFound(name)),
                };
                let _ = reply.send(answer);
            }
            Control::Open { target, token, type_name, reply } => self.open(from, target, token, type_name, reply),
            Control::Watch { target, token, stopped } => self.add_watcher(target, token, stopped),
        }
    }

    /// Answers (or forwards) a request to open a route to `target`.
    fn open(&self, from: NodeId, target: ActorId, token: Token, type_name: String, reply: RawSender) {
        let refuse = |reply: RawSender, e: RemoteError| {
            // `Err(e)` encodes the same whatever the `Ok` type is.
            if let Some(tx) = reply.into_oneshot::<Result<(), RemoteError>>() {
                let _ = tx.send(Err(e));
            }
        };
        if target.node != self.id {
            // Forward towards the owner, never back where it came from.
            match self.peer(target.node) {
                Ok(p) if target.node != from => {
                    let _ = p.control.try_send(Control::Open { target, token, type_name, reply });
                }
                Ok(_) => refuse(reply, RemoteError::NoRoute(target.node)),
                Err(e) => refuse(reply, e),
            }
            return;
        }
        let export = match self.export_for(target.id, &token) {
            Ok(export) => export,
            Err(e) => {
                tracing::debug!(peer = %from, actor = target.id, "route to an actor refused: forged capability");
                return refuse(reply, e);
            }
        };
        match export {
            None => refuse(reply, RemoteError::Stopped),
            Some(e) if e.type_name != type_name => {
                refuse(reply, RemoteError::TypeMismatch { expected: type_name, found: e.type_name.to_owned() })
            }
            Some(e) => (e.open)(reply),
        }
    }

    fn add_watcher(&self, target: ActorId, token: Token, stopped: Watcher) {
        if target.node != self.id {
            if let Ok(p) = self.peer(target.node) {
                let _ = p.control.try_send(Control::Watch { target, token, stopped });
            }
            // No route: dropping `stopped` tells the watcher.
            return;
        }
        match self.export_for(target.id, &token) {
            Ok(Some(e)) => e.watchers.lock().unwrap_or_else(|e| e.into_inner()).push(stopped),
            Ok(None) => {
                let _ = stopped.send(Ok(()));
            }
            Err(e) => {
                tracing::debug!(actor = target.id, "watch of an actor refused: forged capability");
                let _ = stopped.send(Err(e));
            }
        }
    }

    /// This node's export `actor`, if `token` is its capability:
    /// `Forbidden` for a token this node did not mint, `None` if the actor
    /// is gone (or never was: the check needs no record of it).
    fn export_for(&self, actor: u64, token: &Token) -> Result<Option<Arc<Export>>, RemoteError> {
        if !self.caps.check(actor, token) {
            return Err(RemoteError::Forbidden);
        }
        Ok(self.lock().exports.get(&actor).cloned())
    }

    fn actor_stopped(&self, id: u64) {
        let export = {
            let mut st = self.lock();
            st.names.retain(|_, v| *v != id);
            st.exports.remove(&id)
        };
        let Some(e) = export else { return };
        // Close every route into the actor first (their receivers drop and
        // senders see `Closed`), then tell the watchers: a tell after the
        // `Stopped` event fails instead of vanishing.
        let pumps = e.pumps.lock().unwrap_or_else(|e| e.into_inner()).take().unwrap_or_default();
        for p in &pumps {
            p.abort();
        }
        tokio::spawn(async move {
            for p in pumps {
                let _ = p.await;
            }
            for w in e.watchers.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
                let _ = w.send(Ok(()));
            }
        });
    }

    fn peer_lost(&self, peer: NodeId, conn: &Connection) {
        let mut st = self.lock();
        let same = st.peers.get(&peer).is_some_and(|p| Arc::ptr_eq(p.conn.shared(), conn.shared()));
        if same {
            st.peers.remove(&peer);
            st.asks.remove(&peer);
            st.lost.insert(peer);
            if restarted(conn) {
                st.restarted.insert(peer);
            }
            tracing::info!(%peer, "peer lost");
        }
    }

    /// A permit for one more ask waiting on `peer`, if its limit allows.
    pub(crate) fn ask_permit(&self, peer: NodeId) -> Result<tokio::sync::OwnedSemaphorePermit, crate::AskError> {
        let limit = self.cfg.max_pending_asks as usize;
        let permits = {
            let mut st = self.lock();
            if st.asks.len() > 64 && !st.asks.contains_key(&peer) {
                // Forget nodes nobody waits on, so the table stays small.
                st.asks.retain(|_, s| s.available_permits() < limit);
            }
            st.asks.entry(peer).or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(limit))).clone()
        };
        permits.try_acquire_owned().map_err(|_| {
            tracing::debug!(%peer, limit, "ask refused: too many pending");
            crate::AskError::TooManyPending { limit: self.cfg.max_pending_asks }
        })
    }

    pub(crate) fn forget_route(&self, target: ActorId, token: Token) {
        let mut st = self.lock();
        if st.routes.get(&(target, token)).is_some_and(|w| w.strong_count() == 0) {
            st.routes.remove(&(target, token));
        }
    }

    /// The route to `target` for messages of type `M`, shared by every ref
    /// to it on this node.
    pub(crate) fn route<M: RemoteMessage>(
        self: &Arc<Self>,
        target: ActorId,
        token: Token,
        via: Option<NodeId>,
    ) -> Arc<Route<M>> {
        let mut st = self.lock();
        // A route of another message type is not reused (nor dropped under
        // the lock: its drop takes the lock).
        let mut other_type = None;
        if let Some(existing) = st.routes.get(&(target, token)).and_then(Weak::upgrade) {
            match (existing as Arc<dyn Any + Send + Sync>).downcast::<Route<M>>() {
                Ok(route) => return route,
                Err(other) => other_type = Some(other),
            }
        }
        let forged = target.node == self.id && !self.caps.check(target.id, &token);
        let local = if target.node == self.id && !forged {
            st.exports
                .get(&target.id)
                .and_then(|e| e.mailbox.downcast_ref::<Arc<dyn Mailbox<M>>>().cloned())
                .map(Local::new)
        } else {
            None
        };
        let route = Arc::new(Route {
            node: Arc::downgrade(self),
            target,
            token,
            via: if target.node == self.id { None } else { via },
            local,
            sender: tokio::sync::Mutex::new(None),
            ready: Mutex::new(None),
            forbidden: forged.into(),
        });
        st.routes.insert((target, token), Arc::downgrade(&route) as AnyRoute);
        drop(st);
        drop(other_type);
        if route.local.is_none() && target.node != self.id {
            // Open at once, so `try_tell` works soon after the ref arrives;
            // a failure here is reported by the first tell, which retries.
            let eager = Arc::downgrade(&route);
            tokio::spawn(async move {
                if let Some(route) = eager.upgrade() {
                    let _ = route.sender().await;
                }
            });
        }
        route
    }

    /// Asks the owner (directly, or through `via`) for a sender into the
    /// actor's mailbox.
    pub(crate) async fn open_route<M: RemoteMessage>(
        &self,
        target: ActorId,
        token: Token,
        via: Option<NodeId>,
    ) -> Result<mpsc::Sender<M>, RemoteError> {
        let type_name = std::any::type_name::<M>();
        if target.node == self.id {
            // A ref to one of ours without its mailbox: forged, stopped, or
            // of another message type.
            return Err(match self.export_for(target.id, &token)? {
                Some(e) => RemoteError::TypeMismatch { expected: type_name.to_owned(), found: e.type_name.to_owned() },
                None => RemoteError::Stopped,
            });
        }
        let hop = match self.peer(target.node) {
            Ok(p) => p,
            Err(direct) => match via {
                Some(v) if v != target.node => self.peer(v).map_err(|_| direct)?,
                _ => return Err(direct),
            },
        };
        let (reply, answer) = oneshot::channel::<Result<mpsc::Sender<M>, RemoteError>>();
        let raw = RawSender::from_oneshot(reply);
        let type_name = type_name.to_owned();
        hop.control
            .send(Control::Open { target, token, type_name, reply: raw })
            .await
            .map_err(|_| self.why_unreachable(target.node))?;
        self.answer(answer).await?
    }

    /// Resolves when `target` can no longer be reached, saying why.
    pub(crate) async fn watch(&self, target: ActorId, token: Token, via: Option<NodeId>) -> WatchEvent {
        if target.node == self.id {
            let (tx, rx) = oneshot::channel();
            self.add_watcher(target, token, tx);
            return match rx.await {
                Ok(Err(RemoteError::Forbidden)) => WatchEvent::Forbidden,
                _ => WatchEvent::Stopped,
            };
        }
        let hop = match self.peer(target.node).or_else(|e| via.ok_or(e).and_then(|v| self.peer(v))) {
            Ok(hop) => hop,
            Err(_) => return self.event_for(target.node),
        };
        let (tx, rx) = oneshot::channel();
        if hop.control.send(Control::Watch { target, token, stopped: tx }).await.is_err() {
            return self.event_for(target.node);
        }
        match rx.await {
            Ok(Err(RemoteError::Forbidden)) => WatchEvent::Forbidden,
            Ok(_) => WatchEvent::Stopped,
            Err(oneshot::RecvError::Connection(_)) => self.event_for(target.node),
            // Dropped unanswered: the owner has no such actor, or the link
            // towards it went; which one decides the event.
            Err(_) => match self.peer(target.node) {
                Ok(_) => WatchEvent::Stopped,
                Err(_) => self.event_for(target.node),
            },
        }
    }

    fn event_for(&self, node: NodeId) -> WatchEvent {
        match self.why_unreachable(node) {
            RemoteError::NodeRestarted(_) => WatchEvent::NodeRestarted,
            _ => WatchEvent::NodeLost,
        }
    }
}
