//! The node layer: a [`Node`] is a process's identity among its peers. It
//! listens and connects (one connection per peer node), exports actors and
//! reaches actors elsewhere through [`RemoteRef`]s.
//!
//! - `mod.rs`: the [`Node`] handle, what users call.
//! - `inner.rs`: the node behind its handles: taking connections in
//!   (`attach`, which carries out the tie-break), serving peers, watching,
//!   lifecycle and shutdown.
//! - `control.rs`: the control vocabulary nodes exchange (one enum), its
//!   close codes, and which node decides the tie-break between two
//!   connections of the same two nodes.
//! - `peers.rs`: the peer table, live and departed, bounded.
//! - `registry.rs`: this node's exports, by id and by name.
//! - `route.rs`: how messages reach one actor; shared by every ref to it.
//! - `remote_ref.rs`: [`RemoteRef`] and what its operations report.
//! - `request.rs`: requests that stay open: streams of replies, and
//!   updates both ways before a response.
//! - `mailbox.rs`: the [`Mailbox`] adapters implement, pacing, and the pump
//!   that feeds a route's messages to a local actor.
//! - `listener.rs`: admitting incoming transports within limits.
//! - `error.rs`: [`RemoteError`].
//! - `tag.rs`: the message tags compared at lookup and when a route opens.
//! - `directory.rs`: where a node not connected to is found (the cluster
//!   above tells), and connecting to it on demand.
//! - `metrics.rs` (feature `metrics`): the task that records the node's
//!   and its connections' counters through the `metrics` facade.

mod any_ref;
mod control;
mod directory;
mod error;
mod inner;
mod listener;
mod mailbox;
#[cfg(feature = "metrics")]
pub(crate) mod metrics;
mod outbox;
mod peers;
mod registry;
mod remote_ref;
mod request;
mod route;
mod tag;

pub use any_ref::{AnyRef, Exporter};
pub(crate) use directory::Directory;
pub use error::{LookupError, NameTaken, RemoteError};
pub(crate) use inner::{NodeInner, Phase};
pub use mailbox::{ActorExit, Mailbox, RemoteMessage};
pub use remote_ref::{ActorId, AskError, AskPermit, Monitor, RemoteRef, ReplyPort, TellError, WatchEvent};
pub use request::{OpenRequest, Replies, ReplyStream, RequestPort};
pub use tag::message_tag;
pub(crate) use tag::tag;

use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};

use crate::chan::oneshot;
use crate::conn::Role;
use crate::transport::Transport;
use crate::{Config, ConnectError, Connection, NodeId};
use control::Control;

/// A tether node: the unit of identity. Cloning is cheap.
///
/// A process normally has one. Its [`NodeId`] is drawn at start, so a
/// restarted process is a new node; peers notice and report
/// [`WatchEvent::NodeRestarted`] for refs to the old one.
///
/// A node owns its listeners, connections and the tasks serving them.
/// [`Node::shutdown`] ends them all, and peers see it leave
/// ([`WatchEvent::NodeLeft`]); dropping the last handle does the same
/// without waiting.
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
    /// An unnamed node with the default configuration.
    fn default() -> Self {
        let node = Node { inner: Arc::new(NodeInner::new(None, Config::default())) };
        node.sample();
        node
    }
}

/// Counters of a node's bookkeeping, for monitoring and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct NodeStats {
    /// Peers with a live connection.
    pub peers: usize,
    /// Entries in all of the peer table's maps: live peers, departed ones
    /// remembered (at most 1,024), their addresses and names, and ask
    /// limits of live peers.
    pub peer_entries: usize,
    /// Actors exported.
    pub exports: usize,
    /// Routes held (one per actor this node holds refs to).
    pub routes: usize,
    /// Messages held in outboxes now, posted without waiting and not yet
    /// taken by their routes (at most
    /// [`Config::max_outbox`](crate::Config::max_outbox)).
    pub outbox_held: usize,
    /// Posts refused so far because the outboxes were full
    /// ([`RemoteRef::post`]'s `Full`; a `do_send` past the cap).
    pub outbox_refused: u64,
    /// Messages accepted into an outbox and then not delivered (the actor
    /// stopped, its node was lost, or the message could not be carried).
    pub outbox_undelivered: u64,
}

impl Node {
    /// A handle on `inner`, for the layers above.
    pub(crate) fn from_inner(inner: Arc<NodeInner>) -> Node {
        Node { inner }
    }

    /// The node behind this handle, for the layers above.
    pub(crate) fn inner(&self) -> &Arc<NodeInner> {
        &self.inner
    }

    /// A node with an optional human-readable name and the configuration of
    /// every connection it makes or accepts.
    ///
    /// # Errors
    ///
    /// The configuration is checked here, once ([`Config::validate`]).
    pub fn new(name: Option<&str>, cfg: Config) -> Result<Node, crate::ConfigError> {
        cfg.validate()?;
        let node = Node { inner: Arc::new(NodeInner::new(name, cfg)) };
        node.sample();
        Ok(node)
    }

    /// Starts sampling the node's metrics (feature `metrics`), unless it
    /// has: when it is made if a runtime is at hand, else when it first
    /// listens or connects.
    fn sample(&self) {
        #[cfg(feature = "metrics")]
        metrics::start(self);
    }

    /// This node's identity.
    pub fn id(&self) -> NodeId {
        self.inner.id
    }

    /// This node's name, if it has one.
    pub fn name(&self) -> Option<&str> {
        self.inner.name.as_deref()
    }

    /// Accepts TCP connections on `addr` until the node shuts down. Returns
    /// the bound address (useful with port 0).
    ///
    /// At most [`Config::max_connections`] are held at once, and at most
    /// [`Config::max_handshakes`] wait in their handshake (when more come,
    /// the oldest from the busiest source address is dropped), each
    /// handshake bounded by [`Config::handshake_timeout`].
    pub async fn listen(&self, addr: impl ToSocketAddrs) -> std::io::Result<std::net::SocketAddr> {
        let listener = self.bind(addr).await?;
        let local = listener.local_addr()?;
        listener::spawn(listener, (), &self.inner, |stream| std::future::ready(Ok(stream)));
        Ok(local)
    }

    /// Listens on a Unix socket at `path`, with everything [`Node::listen`]
    /// does (the same limits, cookie and handshake, and resumed sessions
    /// after a peer reconnects).
    ///
    /// The socket file is removed when the node shuts down or is dropped. A
    /// socket file already at `path` that nobody listens on (left by a
    /// process that was killed) is replaced; one with a listener behind it,
    /// or any other file, is left alone and this fails with `AddrInUse`.
    /// A listener's peers are told apart by their user id (from the
    /// socket's credentials) where TCP uses the IP address, when handshakes
    /// must be dropped to make room.
    #[cfg(unix)]
    pub async fn listen_unix(&self, path: impl AsRef<std::path::Path>) -> std::io::Result<()> {
        self.refuse_if_closing()?;
        let (listener, file) = listener::bind_unix(path.as_ref()).await?;
        listener::spawn(listener, file, &self.inner, |stream| std::future::ready(Ok(stream)));
        Ok(())
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
        let listener = self.bind(addr).await?;
        let local = listener.local_addr()?;
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        listener::spawn(listener, (), &self.inner, move |stream| {
            crate::transport::tls::accept(acceptor.clone(), stream)
        });
        Ok(local)
    }

    async fn bind(&self, addr: impl ToSocketAddrs) -> std::io::Result<TcpListener> {
        self.refuse_if_closing()?;
        TcpListener::bind(addr).await
    }

    fn refuse_if_closing(&self) -> std::io::Result<()> {
        self.sample();
        if self.inner.lock().closing {
            return Err(std::io::Error::new(std::io::ErrorKind::NotConnected, "the node is shut down"));
        }
        Ok(())
    }

    /// Connects to the node listening at `addr`, or returns the existing
    /// connection if this node already has one to the node there.
    /// [`Config::handshake_timeout`] bounds the TCP connect (here and on
    /// each reconnection), and tether's handshake after it.
    ///
    /// Two nodes that connect to each other at the same moment end up with
    /// one connection between them, the same on both sides.
    pub async fn connect(&self, addr: impl ToSocketAddrs + std::fmt::Debug) -> Result<NodeId, ConnectError> {
        let target: Vec<std::net::SocketAddr> = match tokio::net::lookup_host(&addr).await {
            Ok(found) => found.collect(),
            Err(e) => return Err(ConnectError::Io(e).at(format_args!("{addr:?}"))),
        };
        // Named by where it resolved to, so that two spellings of one
        // address are one address.
        let Some(name) = target.first().map(|a| a.to_string()) else {
            let none = std::io::Error::new(std::io::ErrorKind::NotFound, "no address found");
            return Err(ConnectError::Io(none).at(format_args!("{addr:?}")));
        };
        let dial = crate::conn::dialer(move || {
            let target = target.clone();
            async move { TcpStream::connect(&target[..]).await }
        });
        self.connect_by(name, dial).await
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
        let name = crate::transport::tls::server_name(server_name).map_err(|e| ConnectError::from(e).at(addr))?;
        let connector = tokio_rustls::TlsConnector::from(tls);
        let target = addr.to_owned();
        let dial = crate::conn::dialer(move || {
            crate::transport::tls::connect(connector.clone(), name.clone(), target.clone())
        });
        self.connect_by(addr.to_owned(), dial).await
    }

    /// Connects to the node listening on the Unix socket at `path` (see
    /// [`Node::listen_unix`]), or returns the existing connection to the node
    /// there, like [`Node::connect`]: reconnections dial `path` again and
    /// resume the session, [`Config::handshake_timeout`] bounds each.
    #[cfg(unix)]
    pub async fn connect_unix(&self, path: impl AsRef<std::path::Path>) -> Result<NodeId, ConnectError> {
        let path = path.as_ref().to_owned();
        let name = format!("unix:{}", path.display());
        let dial = crate::conn::dialer(move || tokio::net::UnixStream::connect(path.clone()));
        self.connect_by(name, dial).await
    }

    /// Connects through `dial` to the node at `name` (its address, as
    /// `connect`, `connect_tls` and `connect_unix` spell it), or returns the
    /// live connection to the node there.
    async fn connect_by(&self, name: String, dial: crate::conn::Dialer) -> Result<NodeId, ConnectError> {
        self.sample();
        self.inner.connect_dialer(name.clone(), dial, self.inner.cfg.clone(), None).await.map_err(|e| e.at(name))
    }

    /// Runs the node protocol over a transport made by other means (a
    /// socket pair, memory), in the given role of its handshake. Such a
    /// connection is not remade when its transport breaks: the session
    /// ends with it.
    pub async fn connect_with<T: Transport>(&self, io: T, role: Role) -> Result<NodeId, ConnectError> {
        self.sample();
        if self.inner.lock().closing {
            return Err(ConnectError::NodeShutDown);
        }
        let parent = Some(self.inner.supervisor());
        let conn = Connection::establish(io, self.inner.cfg.clone(), role, self.inner.id, parent).await?;
        self.inner.join(conn, None).await
    }

    /// Exports an actor, by name if `name` is given. The returned ref can be
    /// sent to peers; `lookup` finds named exports.
    pub fn export<M: RemoteMessage>(
        &self,
        name: Option<&str>,
        mailbox: impl Mailbox<M>,
    ) -> Result<RemoteRef<M>, NameTaken> {
        let actor = self.export_many(name, mailbox).finish()?;
        Ok(actor.typed::<M>().expect("an actor of this node takes the type it was exported for"))
    }

    /// Exports an actor that takes several message types under one id and
    /// name: `first`'s, and those [`Exporter::mailbox`] adds. Peers find it
    /// with [`lookup_any`](Self::lookup_any) (or [`lookup`](Self::lookup)
    /// for one of its types) and send each type on its own typed ref.
    pub fn export_many<M: RemoteMessage>(&self, name: Option<&str>, first: impl Mailbox<M>) -> Exporter<'_> {
        Exporter::new(self, name, first)
    }

    /// This node's value of type `T`, made with `T::default()` the first
    /// time: state a framework adapter keeps per node (the exports it made,
    /// say). It lives as long as the node (until its last handle is
    /// dropped), so it may hold what the node's exports hold.
    pub fn extension<T: Default + Send + Sync + 'static>(&self) -> Arc<T> {
        let mut all = self.inner.extensions.lock().unwrap_or_else(|e| e.into_inner());
        let slot = all.entry(std::any::TypeId::of::<T>()).or_insert_with(|| Arc::new(T::default()));
        slot.clone().downcast::<T>().expect("stored under its own type id")
    }

    /// Removes a name; refs already handed out keep working.
    pub fn unexport(&self, name: &str) -> bool {
        let removed = self.inner.lock().registry.unname(name);
        if removed {
            self.inner.registry_changed();
        }
        removed
    }

    /// Finds the actor exported as `name` on the node `peer`, checking that
    /// it takes messages of type `M`: that their [tags](crate::message_tag)
    /// are the same. `peer` is a node this node is connected to, or a member
    /// of its cluster (connected to now).
    pub async fn lookup<M: RemoteMessage>(&self, peer: NodeId, name: &str) -> Result<RemoteRef<M>, LookupError> {
        let actor = self.lookup_any(peer, name).await?;
        let found = actor.typed::<M>()?;
        // Open now, so the first tell (and try_tell) need not wait.
        found.route.sender().await?;
        Ok(found)
    }

    /// Finds the actor exported as `name` on the node `peer`, whatever
    /// message types it takes (see [`AnyRef::tags`]).
    pub async fn lookup_any(&self, peer: NodeId, name: &str) -> Result<AnyRef, LookupError> {
        let control = self.inner.reach(peer).await?.control;
        let (reply, answer) = oneshot::channel();
        control
            .send(Control::Lookup { name: name.to_owned(), reply })
            .await
            .map_err(|_| self.inner.why_unreachable(peer))?;
        let exported = self.inner.answer(answer).await??;
        let target = ActorId { node: peer, id: exported.actor };
        Ok(AnyRef::found(&self.inner, target, exported.token, exported.tags))
    }

    /// Nodes this node has a live connection to.
    pub fn peers(&self) -> Vec<NodeId> {
        self.inner.lock().peers.ids()
    }

    /// The connection to `peer`, if there is one.
    pub fn connection(&self, peer: NodeId) -> Option<Connection> {
        self.inner.lock().peers.get(peer).map(|p| p.conn.clone())
    }

    /// Counters of the node's bookkeeping.
    pub fn stats(&self) -> NodeStats {
        let st = self.inner.lock();
        let (peers, peer_entries) = st.peers.sizes();
        let outbox = &self.inner.outbox;
        NodeStats {
            peers,
            peer_entries,
            exports: st.registry.len(),
            routes: st.routes.len(),
            outbox_held: outbox.held.load(std::sync::atomic::Ordering::Relaxed),
            outbox_refused: outbox.refused.load(std::sync::atomic::Ordering::Relaxed),
            outbox_undelivered: outbox.undelivered.load(std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// Shuts the node down, in an order peers can rely on:
    ///
    /// 1. Its listeners stop; when this returns their ports can be bound
    ///    again.
    /// 2. Watchers of its actors that have stopped are told so (these
    ///    messages go out before the goodbyes below).
    /// 3. Every connection sends what it has queued, then says goodbye:
    ///    peers see the node leave ([`WatchEvent::NodeLeft`],
    ///    [`RemoteError::NodeLeft`]) within a round trip. A peer that does
    ///    not take the goodbye is given [`Config::handshake_timeout`].
    /// 4. Its supervisor actors stop.
    ///
    /// Afterwards the node takes nothing new in: `listen` and `connect`
    /// fail, and refs held through it report [`RemoteError::NodeGone`].
    /// Calling it again does nothing more.
    pub async fn shutdown(&self) {
        self.inner.shutdown().await
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{AskError, ConnectionError};

    /// A mailbox that keeps every request unanswered and says when one came.
    struct Silent(tokio::sync::mpsc::UnboundedSender<ReplyPort<u8>>);

    impl Mailbox<ReplyPort<u8>> for Silent {
        fn deliver(&self, msg: ReplyPort<u8>) -> Result<(), ReplyPort<u8>> {
            self.0.send(msg).map_err(|e| e.0)
        }
        fn stopped(&self) -> futures::future::BoxFuture<'static, ()> {
            let tx = self.0.clone();
            Box::pin(async move { tx.closed().await })
        }
    }

    /// A node's connection whose supervisor actor panics ends with
    /// `SupervisorFailed` (the node's actor, its parent, sees to it): a
    /// pending ask fails at once with that, and the peer is gone from the
    /// node's table.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panicking_connection_supervisor_fails_its_connection() {
        const T: Duration = Duration::from_secs(10);
        let (a, b) =
            (Node::new(Some("a"), Config::default()).unwrap(), Node::new(Some("b"), Config::default()).unwrap());
        let (tx, mut arrived) = tokio::sync::mpsc::unbounded_channel();
        b.export(Some("silent"), Silent(tx)).unwrap();
        let b_id = a.connect(b.listen("127.0.0.1:0").await.unwrap()).await.unwrap();
        let r: RemoteRef<ReplyPort<u8>> = a.lookup(b_id, "silent").await.unwrap();
        let ask = tokio::spawn(async move { r.ask(|reply| reply, Duration::from_secs(60)).await });
        let _kept = tokio::time::timeout(T, arrived.recv()).await.unwrap().expect("the ask arrived");

        let conn = a.connection(b_id).unwrap();
        assert!(!a.inner.supervisor().is_spawned(), "no connection needed the node's actor yet");
        conn.shared().panic_supervisor();
        let got = tokio::time::timeout(T, ask).await.unwrap().unwrap();
        assert!(
            matches!(got, Err(AskError::Reply(oneshot::RecvError::Connection(ConnectionError::SupervisorFailed)))),
            "{got:?}"
        );
        assert!(matches!(conn.closed().await, ConnectionError::SupervisorFailed));
        let gone = a.inner.until_peers(|peers| peers.ids().is_empty());
        tokio::time::timeout(T, gone).await.expect("the node forgets the peer");
    }

    /// A watch placed while an actor is stopping (stopped, its routes not
    /// yet closed) is told only once they are: a tell after its `Stopped`
    /// fails rather than vanishes. (Told at once, it overtook the closing of
    /// the routes, and a group send went to the stopped member.)
    #[tokio::test(flavor = "current_thread")]
    async fn a_watch_placed_while_an_actor_stops_waits_for_its_routes_to_close() {
        use futures::FutureExt;
        let node = Node::new(None, Config::default()).unwrap();
        let (tx, _arrived) = tokio::sync::mpsc::unbounded_channel();
        let r: RemoteRef<ReplyPort<u8>> = node.export(None, Silent(tx)).unwrap();
        // Heard to stop; the task closing its routes has not run yet (this
        // runtime runs it only when the test yields).
        node.inner.actor_stopped(r.id().id);
        let (told, mut watch) = oneshot::channel();
        node.inner.add_watcher(None, r.id(), r.token(), told, route::Hops::default());
        assert!((&mut watch).now_or_never().is_none(), "told before the routes closed");
        let got = tokio::time::timeout(Duration::from_secs(5), watch).await.expect("told once they are");
        assert!(matches!(got, Ok(Ok(ActorExit::Stopped { reason: None }))), "{got:?}");
        // Once stopped, a later watch is told at once.
        let (told, watch) = oneshot::channel();
        node.inner.add_watcher(None, r.id(), r.token(), told, route::Hops::default());
        let got = tokio::time::timeout(Duration::from_secs(5), watch).await;
        assert!(matches!(got, Ok(Ok(Ok(ActorExit::Stopped { reason: None })))), "{got:?}");
    }

    /// A mailbox whose `stopped` future holds `probe` while it waits.
    struct Probed {
        arrived: tokio::sync::mpsc::UnboundedSender<ReplyPort<u8>>,
        probe: Arc<()>,
    }

    impl Mailbox<ReplyPort<u8>> for Probed {
        fn deliver(&self, msg: ReplyPort<u8>) -> Result<(), ReplyPort<u8>> {
            self.arrived.send(msg).map_err(|e| e.0)
        }
        fn stopped(&self) -> futures::future::BoxFuture<'static, ()> {
            let (tx, probe) = (self.arrived.clone(), self.probe.clone());
            Box::pin(async move {
                tx.closed().await;
                drop(probe);
            })
        }
    }

    /// One task per node waits for every export's actor to stop: each stop
    /// is heard (the export goes, its watchers are told), and the waits of
    /// actors still running go with the node.
    #[tokio::test(flavor = "current_thread")]
    async fn one_task_hears_every_export_stop_and_the_waits_go_with_the_node() {
        let node = Node::new(None, Config::default()).unwrap();
        let probe = Arc::new(());
        let mut exports = Vec::new();
        for _ in 0..3 {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            let r: RemoteRef<ReplyPort<u8>> = node.export(None, Probed { arrived: tx, probe: probe.clone() }).unwrap();
            exports.push((r, rx));
        }
        assert_eq!(node.inner.lock().watching.len(), 1, "one task for all of them");
        let (kept, kept_rx) = exports.pop().unwrap();
        for (r, rx) in exports {
            drop(rx);
            let told = tokio::time::timeout(Duration::from_secs(5), r.monitor()).await.unwrap();
            assert_eq!(told, WatchEvent::Stopped { reason: None });
        }
        assert_eq!(node.stats().exports, 1);
        // The running actor's wait holds a probe (its mailbox does too);
        // the node's drop drops them.
        assert!(Arc::strong_count(&probe) > 2);
        // (A ref to a local actor holds its mailbox.)
        drop(kept);
        drop(node);
        assert_eq!(Arc::strong_count(&probe), 1, "the wait went with the node");
        drop(kept_rx);
    }

    /// A mailbox whose actor failed with `error` once its channel closed.
    struct Failing {
        arrived: tokio::sync::mpsc::UnboundedSender<ReplyPort<u8>>,
        error: String,
    }

    impl Mailbox<ReplyPort<u8>> for Failing {
        fn deliver(&self, msg: ReplyPort<u8>) -> Result<(), ReplyPort<u8>> {
            self.arrived.send(msg).map_err(|e| e.0)
        }
        fn stopped(&self) -> futures::future::BoxFuture<'static, ()> {
            let tx = self.arrived.clone();
            Box::pin(async move { tx.closed().await })
        }
        fn exit(&self) -> futures::future::BoxFuture<'static, ActorExit> {
            Box::pin(std::future::ready(ActorExit::Failed { error: self.error.clone() }))
        }
    }

    /// What the adapter says about the end reaches the watchers, cut to 1024
    /// bytes at a character boundary. A watch that comes once the actor is
    /// gone learns only that: how it ended is not kept.
    #[tokio::test(flavor = "current_thread")]
    async fn watchers_hear_how_the_actor_ended_its_text_cut() {
        let node = Node::new(None, Config::default()).unwrap();
        let (tx, arrived) = tokio::sync::mpsc::unbounded_channel();
        // 'é' is two bytes: byte 1024 falls inside the 513th.
        let r: RemoteRef<ReplyPort<u8>> = node.export(None, Failing { arrived: tx, error: "é".repeat(600) }).unwrap();
        // Polled first, this watch is placed before the task that hears the
        // stop runs (this runtime runs it only when the test yields).
        let before = r.monitor();
        drop(arrived);
        let cut = ActorExit::Failed { error: "é".repeat(512) };
        let limit = Duration::from_secs(5);
        assert_eq!(tokio::time::timeout(limit, before).await.unwrap(), WatchEvent::from(cut));
        assert_eq!(tokio::time::timeout(limit, r.monitor()).await.unwrap(), WatchEvent::Stopped { reason: None });
    }

    /// A peer's answer to a watch is cut when decoded, whatever length it
    /// claims: the decoder keeps at most 1024 bytes of the text.
    #[test]
    fn a_decoded_exit_keeps_at_most_1024_bytes_of_text() {
        let long = ActorExit::Stopped { reason: Some("x".repeat(5000)) };
        let bytes = postcard::to_allocvec(&long).unwrap();
        let back: ActorExit = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, ActorExit::Stopped { reason: Some("x".repeat(1024)) });
        // As docs/PROTOCOL.md shows the answer to a watch.
        let answer: Result<ActorExit, RemoteError> = Ok(ActorExit::Stopped { reason: Some("bye".into()) });
        assert_eq!(postcard::to_allocvec(&answer).unwrap(), [0, 0, 1, 3, b'b', b'y', b'e']);
        let event = WatchEvent::Failed { error: "y".repeat(3000) };
        let back: WatchEvent = postcard::from_bytes(&postcard::to_allocvec(&event).unwrap()).unwrap();
        assert_eq!(back, WatchEvent::Failed { error: "y".repeat(1024) });
    }
}
