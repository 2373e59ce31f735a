//! What a node is behind its handles: identity, configuration, the peer
//! table, the registry and the routes, and the work that serves peers (one
//! task per connection reading its control messages).
//!
//! Lifecycle. A node owns every task it starts: the listeners, one serving
//! task per connection, one task waiting for the exports' actors to stop,
//! and the short tasks that tell watchers an actor stopped. `shutdown`
//! ends them in an order peers can rely on: listeners first (the port is
//! free when it returns), then stop notifications are queued, then each
//! connection says goodbye after what it already queued, so a watcher
//! hears `Stopped` before it hears that the node left.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::Poll;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use futures::task::AtomicWaker;
use tokio::task::{JoinHandle, JoinSet};
use tracing::Instrument;

use super::control::{decides, Control, Watcher, CLOSE_DUPLICATE, CLOSE_NODE_LEFT};
use super::directory::Directory;
use super::error::RemoteError;
use super::mailbox::ActorExit;
use super::peers::{Peer, PeerTable};
use super::registry::{self, Export, Registry};
use super::remote_ref::{ActorId, WatchEvent};
use super::route::{AnyRoute, Hops};
use crate::auth::{CapabilityKey, Token};
use crate::chan::{mpsc, oneshot, RawSender};
use crate::conn::SupervisorParent;
use crate::{Acceptor, Config, ConnectError, Connection, NodeId};

/// How long a dial the peer did not keep waits for the connection the peer
/// kept to come live here before it dials again: the other half of a
/// simultaneous dial says hello within a round trip; a connection we
/// closed never will.
const REDIAL_AFTER: Duration = Duration::from_millis(50);

#[derive(Default)]
pub(crate) struct NodeState {
    pub(crate) peers: PeerTable,
    pub(crate) registry: Registry,
    /// Keyed by token too: a forged ref must not share a real one's route.
    pub(crate) routes: HashMap<super::route::RouteKey, AnyRoute>,
    /// Set by `shutdown` (or the drop of the last handle): nothing new is
    /// taken in.
    pub(crate) closing: bool,
    listeners: Vec<JoinHandle<()>>,
    /// One task per connection, serving its control messages.
    serving: JoinSet<()>,
    /// The task waiting for exported actors to stop (see [`StopWatch`]).
    pub(super) watching: JoinSet<()>,
    /// Actors that stopped, their watchers being told.
    stopping: JoinSet<()>,
    /// Tasks of the layers above (a cluster's membership) that end on their
    /// own once shutdown begins; waited for at shutdown, left to finish
    /// when the node is dropped.
    services: Vec<JoinHandle<()>>,
}

/// How far a node's shutdown has come; tasks wait for their phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Phase {
    Running,
    /// Listeners stop; nothing new is taken in.
    Closing,
    /// Stop notices are queued: connections say goodbye.
    Goodbye,
}

/// Spawns `task` into `set`, reaping the finished ones first, so a set
/// holds only running tasks.
fn spawn_in(set: &mut JoinSet<()>, task: impl std::future::Future<Output = ()> + Send + 'static) {
    while set.try_join_next().is_some() {}
    set.spawn(task);
}

pub(crate) struct NodeInner {
    pub(crate) id: NodeId,
    pub(crate) name: Option<String>,
    pub(crate) cfg: Config,
    /// Mints and checks the capability tokens of this node's actors.
    pub(crate) caps: CapabilityKey,
    /// Takes incoming transports: new peers, or sessions coming back.
    pub(crate) acceptor: Acceptor,
    state: Mutex<NodeState>,
    /// Woken whenever the peer table changes.
    peers_changed: tokio::sync::Notify,
    /// How far shutdown has come; dropped with the node (which ends every
    /// wait on it).
    shutdown: tokio::sync::watch::Sender<Phase>,
    /// The node's actor, parent of its connections' supervisors; spawned by
    /// the first of them (a node can be made outside a runtime, and one whose
    /// connections never failed needs none).
    supervisor: SupervisorParent,
    /// Where nodes not connected to are found: the cluster, once joined.
    pub(crate) directory: std::sync::OnceLock<Arc<dyn Directory>>,
    /// Dials made on demand, shared per address (see `directory::Dialing`).
    pub(crate) dialing: super::directory::Dialing,
    /// Bumped whenever the registry changes (an export named, unnamed, or
    /// gone), for the layers above that publish it.
    pub(crate) exports_changed: tokio::sync::watch::Sender<u64>,
    /// State the layers above and framework adapters keep per node, by
    /// type (see `Node::extension`); dropped with the node.
    pub(crate) extensions: Mutex<HashMap<std::any::TypeId, Arc<dyn std::any::Any + Send + Sync>>>,
    /// What the routes' outboxes hold and refused (see `outbox.rs`).
    pub(crate) outbox: super::outbox::OutboxCounters,
    /// Every export's wait for its actor to stop.
    stop_watch: StopWatch,
}

/// Every export's wait for its actor to stop, polled by one task per node
/// (`watch_stops`): a task per export cost about 300 bytes each, most of
/// an idle export. The waits are polled under the lock, so a
/// [`Mailbox::stopped`](super::Mailbox::stopped) future must not export.
#[derive(Default)]
struct StopWatch {
    waits: Mutex<FuturesUnordered<StopWait>>,
    /// The task polling `waits`, woken when one is added.
    task: AtomicWaker,
}

/// One export's wait: resolves to its id once its actor stopped.
struct StopWait {
    id: u64,
    stopped: BoxFuture<'static, ()>,
}

impl std::future::Future for StopWait {
    type Output = u64;

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<u64> {
        self.stopped.as_mut().poll(cx).map(|()| self.id)
    }
}

/// The task of a node's [`StopWatch`]: unregisters each export whose actor
/// stopped and tells its watchers. Ends with the node.
async fn watch_stops(node: Weak<NodeInner>) {
    loop {
        let stopped = std::future::poll_fn(|cx| {
            let Some(node) = node.upgrade() else { return Poll::Ready(None) };
            node.stop_watch.task.register(cx.waker());
            let mut ids = Vec::new();
            let mut waits = node.stop_watch.waits.lock().unwrap_or_else(|e| e.into_inner());
            // Pending when none is ready, and also after a turn of 32 (the
            // set then wakes this task again).
            while let Poll::Ready(Some(id)) = waits.poll_next_unpin(cx) {
                ids.push(id);
            }
            drop(waits);
            match ids.is_empty() {
                true => Poll::Pending,
                false => Poll::Ready(Some((node, ids))),
            }
        })
        .await;
        let Some((node, ids)) = stopped else { return };
        for id in ids {
            node.actor_stopped(id);
        }
    }
}

impl NodeInner {
    pub(crate) fn new(name: Option<&str>, cfg: Config) -> NodeInner {
        let id = NodeId(uuid::Uuid::new_v4());
        NodeInner {
            id,
            name: name.map(str::to_owned),
            acceptor: Acceptor::for_node(cfg.clone(), id),
            cfg,
            caps: CapabilityKey::new(),
            state: Mutex::new(NodeState::default()),
            peers_changed: tokio::sync::Notify::new(),
            shutdown: tokio::sync::watch::channel(Phase::Running).0,
            supervisor: SupervisorParent::default(),
            directory: std::sync::OnceLock::new(),
            dialing: Default::default(),
            exports_changed: tokio::sync::watch::channel(0).0,
            extensions: Mutex::new(HashMap::new()),
            outbox: Default::default(),
            stop_watch: StopWatch::default(),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, NodeState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn supervisor(&self) -> &SupervisorParent {
        &self.supervisor
    }

    /// Resolves once shutdown has reached `phase` (or the node is dropped).
    pub(crate) fn on_shutdown(&self, phase: Phase) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.shutdown.subscribe();
        async move {
            let _ = rx.wait_for(|now| *now >= phase).await;
        }
    }

    /// Keeps a listener's task, to stop it at shutdown.
    pub(crate) fn add_listener(&self, task: JoinHandle<()>) {
        let mut st = self.lock();
        if st.closing {
            task.abort();
        } else {
            st.listeners.retain(|l| !l.is_finished());
            st.listeners.push(task);
        }
    }

    /// Waits for `actor` to stop, then unregisters it and tells its watchers.
    pub(crate) fn watch_export(self: &Arc<Self>, id: u64, stopped: futures::future::BoxFuture<'static, ()>) {
        self.stop_watch.waits.lock().unwrap_or_else(|e| e.into_inner()).push(StopWait { id, stopped });
        let mut st = self.lock();
        // The first export's, the first since shutdown took the task, or
        // after a `stopped` future panicked in it (the set drops that one).
        while st.watching.try_join_next().is_some() {}
        if st.watching.is_empty() {
            st.watching.spawn(watch_stops(Arc::downgrade(self)));
        } else {
            self.stop_watch.task.wake();
        }
    }

    /// Takes a fresh connection in: one connection per peer node. Returns
    /// the peer and a signal: `true` once the connection is usable (kept,
    /// and the peer's hello heard), `false` if it lost the tie-break to
    /// another connection with the same node (see [`Control`]).
    pub(crate) fn attach(
        self: &Arc<Self>,
        conn: Connection,
        dialed: Option<String>,
    ) -> (NodeId, tokio::sync::oneshot::Receiver<bool>) {
        let peer_id = conn.peer_id();
        let owner: Weak<dyn std::any::Any + Send + Sync> = Arc::downgrade(self) as _;
        conn.shared().set_owner(owner);
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let Some((control, incoming)) = conn.root::<Control, Control>() else {
            // Taken by someone else: not a node's connection.
            return (peer_id, ready_rx);
        };
        let mut st = self.lock();
        if st.closing {
            drop(st);
            conn.shared().close(CLOSE_NODE_LEFT, "node shut down");
            return (peer_id, ready_rx);
        }
        if let Some(addr) = dialed {
            st.peers.dialed(addr, peer_id);
        }
        let decider = decides(self.id, peer_id);
        // The decider keeps the first connection with the peer that carries
        // traffic; one that ended or waits for its transport is replaced.
        let keep = decider && !st.peers.is_up(peer_id);
        if decider && keep {
            self.take_peer(&mut st, peer_id, Peer { conn: conn.clone(), control: control.clone() });
        }
        // The other side says hello only once it has taken the connection
        // in (see `Serve::decided`), so the decider's `connect` returns to a
        // peer that already lists it.
        let span = conn.shared().span.clone();
        if decider {
            let _ = control.try_send(Control::Hello { name: self.name.clone(), keep });
        } else {
            tracing::debug!(parent: &span, "the peer decides whether this connection is kept (tie-break)");
        }
        if decider && keep {
            tracing::debug!(parent: &span, "connection kept: the first live one with the peer (tie-break)");
        }
        if decider && !keep {
            // The other side closes it once it has read our hello; until
            // then it is held (closing it here could cut the hello off).
            tracing::debug!(parent: &span, "second connection with the peer not kept (tie-break)");
            let _ = ready_tx.send(false);
            let shutdown = self.on_shutdown(Phase::Goodbye);
            let hold = async move {
                let _hold = (control, incoming);
                let limit = conn.shared().cfg.handshake_timeout;
                tokio::select! {
                    _ = tokio::time::timeout(limit, conn.closed()) => {}
                    () = shutdown => {}
                }
                conn.shared().close(CLOSE_DUPLICATE, "another connection with this node is kept");
            };
            spawn_in(&mut st.serving, hold.instrument(span));
            return (peer_id, ready_rx);
        }
        let serve = Serve {
            node: Arc::downgrade(self),
            peer: peer_id,
            conn,
            control,
            incoming,
            ready: Some(ready_tx),
            kept: decider,
        };
        spawn_in(&mut st.serving, serve.run(self.on_shutdown(Phase::Goodbye)).instrument(span));
        (peer_id, ready_rx)
    }

    /// Makes `peer` the connection to `id`, closing one it replaces.
    fn take_peer(&self, st: &mut NodeState, id: NodeId, peer: Peer) {
        if let Some(old) = st.peers.insert(id, peer) {
            old.conn.shared().close(CLOSE_DUPLICATE, "replaced by a newer connection");
        }
        self.peers_changed.notify_waiters();
    }

    /// Dials with `dial` (the session resumes across broken transports as
    /// `cfg.reconnect` says), unless a peer dialed at `addr` is live (and
    /// is `expect`, when given: another one there is a process gone, whose
    /// session has not ended yet).
    pub(crate) async fn connect_dialer(
        self: &Arc<Self>,
        addr: String,
        dial: crate::conn::Dialer,
        cfg: Config,
        expect: Option<NodeId>,
    ) -> Result<NodeId, ConnectError> {
        {
            let st = self.lock();
            if st.closing {
                return Err(ConnectError::NodeShutDown);
            }
            if let Some(id) = st.peers.live_at(&addr) {
                if expect.is_none_or(|e| e == id) {
                    tracing::debug!(%addr, peer = %id, "not dialing: connected already");
                    return Ok(id);
                }
            }
        }
        let limit = self.cfg.handshake_timeout;
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            tracing::debug!(%addr, "dialing");
            let parent = Some(self.supervisor());
            let conn = Connection::dial_as(dial.clone(), addr.clone(), cfg.clone(), self.id, parent).await?;
            let id = match self.attached(conn, Some(addr.clone()), limit).await? {
                (id, true) => return Ok(id),
                (id, false) => id,
            };
            // The peer keeps another connection with us. Mostly one it
            // dialed at the same time, live here as soon as its hello
            // arrives; but it may be one we closed whose end has not reached
            // it yet, and then only a new dial helps.
            if self.until_live(id, REDIAL_AFTER).await.is_ok() {
                return Ok(id);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ConnectError::Timeout(limit));
            }
            tracing::debug!(%addr, peer = %id, "the peer keeps a connection we do not have: dialing again");
        }
    }

    /// Takes a fresh connection in and waits until the peer can be asked
    /// things: its hello heard, or, if another connection with it was kept
    /// instead, that one live.
    pub(crate) async fn join(
        self: &Arc<Self>,
        conn: Connection,
        dialed: Option<String>,
    ) -> Result<NodeId, ConnectError> {
        let limit = self.cfg.handshake_timeout;
        match self.attached(conn, dialed, limit).await? {
            (id, true) => Ok(id),
            (id, false) => self.until_live(id, limit).await.map(|()| id),
        }
    }

    /// Takes a fresh connection in: the peer, and whether this connection
    /// was kept (`false`: the peer keeps another one with us).
    async fn attached(
        self: &Arc<Self>,
        conn: Connection,
        dialed: Option<String>,
        limit: Duration,
    ) -> Result<(NodeId, bool), ConnectError> {
        let (id, ready) = self.attach(conn, dialed);
        match tokio::time::timeout(limit, ready).await {
            Ok(Ok(kept)) => Ok((id, kept)),
            Ok(Err(_)) if self.lock().closing => Err(ConnectError::NodeShutDown),
            Ok(Err(_)) => Err(ConnectError::Eof),
            Err(_) => Err(ConnectError::Timeout(limit)),
        }
    }

    /// Runs `task`, which must end by itself once shutdown reaches
    /// `Closing` (or the node is dropped): shutdown waits for it before its
    /// goodbye phase; a dropped node lets it finish. False if the node is
    /// shutting down.
    pub(crate) fn spawn_service(&self, task: impl std::future::Future<Output = ()> + Send + 'static) -> bool {
        let mut st = self.lock();
        if st.closing {
            return false;
        }
        st.services.retain(|t| !t.is_finished());
        st.services.push(tokio::spawn(task));
        true
    }

    /// Waits up to `limit` for a live connection to `id`.
    pub(crate) async fn until_live(&self, id: NodeId, limit: Duration) -> Result<(), ConnectError> {
        let live = self.until_peers(|peers| peers.get(id).is_some());
        tokio::time::timeout(limit, live).await.map_err(|_| ConnectError::Timeout(limit))
    }

    /// Resolves once `cond` holds of the peer table, checked again whenever
    /// the table changes.
    pub(crate) async fn until_peers(&self, cond: impl Fn(&PeerTable) -> bool) {
        loop {
            let changed = self.peers_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if cond(&self.lock().peers) {
                return;
            }
            changed.await;
        }
    }

    /// A peer's connection ended.
    fn peer_lost(&self, peer: NodeId, conn: &Connection) {
        let fate = self.lock().peers.remove(peer, conn);
        if let Some(fate) = fate {
            tracing::info!(%peer, ?fate, "peer gone");
            self.peers_changed.notify_waiters();
        }
    }

    pub(crate) fn peer(&self, id: NodeId) -> Result<Peer, RemoteError> {
        let peer = self.lock().peers.get(id).cloned();
        peer.ok_or_else(|| self.why_unreachable(id))
    }

    pub(crate) fn why_unreachable(&self, id: NodeId) -> RemoteError {
        let st = self.lock();
        if st.closing {
            return RemoteError::NodeGone;
        }
        match st.peers.fate(id) {
            Some(fate) => fate.error(id),
            None => RemoteError::NoRoute(id),
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
    pub(crate) async fn answer<T: crate::RemoteMessage>(&self, rx: oneshot::Receiver<T>) -> Result<T, RemoteError> {
        let limit = self.cfg.handshake_timeout;
        match tokio::time::timeout(limit, rx).await {
            Err(_) => Err(RemoteError::Timeout(limit)),
            Ok(Ok(v)) => Ok(v),
            Ok(Err(_)) => Err(RemoteError::Stopped),
        }
    }

    fn handle(&self, from: NodeId, msg: Control) {
        match msg {
            Control::Hello { name, .. } => {
                tracing::debug!(?name, "peer said hello");
                if let Some(name) = name {
                    self.lock().peers.named(name, from);
                    // It may have noted an older incarnation as restarted.
                    self.peers_changed.notify_waiters();
                }
            }
            Control::Lookup { name, reply } => {
                let answer = self.lock().registry.lookup(&name, &self.caps);
                let _ = reply.send(answer);
            }
            Control::Open { target, token, tag, reply, hops } => self.open(from, target, token, tag, reply, hops),
            Control::Watch { target, token, stopped, hops } => {
                self.add_watcher(Some(from), target, token, stopped, hops)
            }
        }
    }

    /// Answers (or forwards) a request to open a route to `target`.
    fn open(&self, from: NodeId, target: ActorId, token: Token, tag: String, reply: RawSender, hops: Hops) {
        use registry::refuse;
        if target.node != self.id {
            // Forward towards the owner, never back where it came from.
            match self.next_hop(target.node, &hops, Some(from)) {
                Ok((p, hops)) => {
                    let _ = p.control.try_send(Control::Open { target, token, tag, reply, hops });
                }
                Err(e) => refuse(reply, e),
            }
            return;
        }
        let export = match self.export_for(target.id, &token) {
            Ok(export) => export,
            Err(e) => {
                tracing::debug!(actor = target.id, "route to an actor refused: forged capability");
                return refuse(reply, e);
            }
        };
        match export {
            None => refuse(reply, RemoteError::Stopped),
            Some(e) => {
                let span = tracing::info_span!("route", actor = target.id, %tag, %from);
                tracing::debug!(parent: &span, "route opened");
                let trace = self.cfg.trace_propagation.clone().map(|p| (p, target.id));
                e.open(tag, reply, registry::Delivery { span, trace })
            }
        }
    }

    /// Adds a watcher of `target` (from the peer `from`, or from this
    /// node), or forwards the watch towards the owner like `open`.
    pub(crate) fn add_watcher(
        &self,
        from: Option<NodeId>,
        target: ActorId,
        token: Token,
        stopped: Watcher,
        hops: Hops,
    ) {
        if target.node != self.id {
            if let Ok((p, hops)) = self.next_hop(target.node, &hops, from) {
                let _ = p.control.try_send(Control::Watch { target, token, stopped, hops });
            }
            // No route: dropping `stopped` tells the watcher.
            return;
        }
        match self.export_for(target.id, &token) {
            Ok(Some(e)) => e.add_watcher(stopped),
            // Gone before the watch came: how it ended is not kept.
            Ok(None) => {
                let _ = stopped.send(Ok(ActorExit::Stopped { reason: None }));
            }
            Err(e) => {
                tracing::debug!(actor = target.id, "watch of an actor refused: forged capability");
                let _ = stopped.send(Err(e));
            }
        }
    }

    /// This node's export `actor`, if `token` is its capability (also while
    /// the actor is stopping: its routes still closing, its watchers not yet
    /// told): `Forbidden` for a token this node did not mint, `None` if the
    /// actor is gone (or never was: the check needs no record of it).
    pub(crate) fn export_for(&self, actor: u64, token: &Token) -> Result<Option<Arc<Export>>, RemoteError> {
        registry::check(&self.caps, actor, token)?;
        Ok(self.lock().registry.get_stopping(actor).cloned())
    }

    /// The actor `id` stopped: unregisters it, and tells its watchers once
    /// its routes are closed.
    pub(crate) fn actor_stopped(&self, id: u64) {
        let mut st = self.lock();
        let Some(export) = st.registry.remove(id) else { return };
        spawn_in(&mut st.stopping, export.stop());
        drop(st);
        self.registry_changed();
    }

    /// The layer above learnt that `id`'s process is gone and another took
    /// its place (the cluster's `NodeRestarted`). A connection to it that
    /// waits for a resume that cannot come (this side accepted it, so only
    /// the peer could have dialed back) ends now, as restarted, rather than
    /// when its linger runs out, as lost.
    pub(crate) fn peer_restarted(&self, id: NodeId) {
        let conn = self.lock().peers.get(id).map(|p| p.conn.clone());
        if let Some(conn) = conn {
            tracing::info!(parent: &conn.shared().span, "the cluster reports the peer restarted; its connection ends");
            conn.shared().fail(crate::ConnectionError::SessionLost(crate::SessionLost::PeerRestarted));
        }
    }

    /// Tells the layers above that the registry changed.
    pub(crate) fn registry_changed(&self) {
        self.exports_changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// This node's named exports: name, actor id and message tag, a row per
    /// message type.
    pub(crate) fn named_exports(&self) -> Vec<(String, u64, String)> {
        self.lock().registry.named()
    }

    /// Whether the actor `id` is exported (and has not been heard to stop).
    pub(crate) fn is_exported(&self, id: u64) -> bool {
        self.lock().registry.get(id).is_some()
    }

    /// Those of `ids` no longer exported, under one lock.
    pub(crate) fn not_exported(&self, ids: impl IntoIterator<Item = u64>) -> std::collections::HashSet<u64> {
        let st = self.lock();
        ids.into_iter().filter(|id| st.registry.get(*id).is_none()).collect()
    }

    /// A permit for one more ask waiting on `peer`, if its limit allows.
    pub(crate) fn ask_permit(&self, peer: NodeId) -> Result<tokio::sync::OwnedSemaphorePermit, crate::AskError> {
        let limit = self.cfg.max_pending_asks as usize;
        let permits = self.lock().peers.asks(peer, limit);
        permits.try_acquire_owned().map_err(|_| {
            tracing::debug!(%peer, limit, "ask refused: too many pending");
            crate::AskError::TooManyPending { limit: self.cfg.max_pending_asks }
        })
    }

    /// Watches `target`: the returned future resolves when it can no longer
    /// be reached, saying why. The watch is placed at once where it can be
    /// (the actor is here, or its node is connected and its control channel
    /// has room), so it holds from the call, however late the future is
    /// first polled, and goes before any later control message to that node;
    /// otherwise it is placed when the future is first polled.
    pub(crate) fn watch(self: &Arc<Self>, target: ActorId, token: Token, hops: Hops) -> BoxFuture<'static, WatchEvent> {
        if target.node == self.id {
            let (tx, rx) = oneshot::channel();
            self.add_watcher(None, target, token, tx, Hops::default());
            return Box::pin(async move { rx.await.map_or(WatchEvent::GONE, answered) });
        }
        // To the owner itself if connected (then without hops), now.
        let placed = self.peer(target.node).ok().and_then(|owner| {
            let (tx, rx) = oneshot::channel();
            let watch = Control::Watch { target, token, stopped: tx, hops: Hops::default() };
            match owner.control.try_send_holding(watch) {
                Ok(mpsc::Tried::Sent) => Some((None, rx)),
                // Its reply port is in its encoding: sent as it is.
                Ok(mpsc::Tried::Held(held)) => Some((Some(held), rx)),
                // Placed the long way below.
                Ok(mpsc::Tried::Full(_)) | Err(_) => None,
            }
        });
        let node = self.clone();
        Box::pin(async move {
            let rx = match placed {
                Some((None, rx)) => rx,
                Some((Some(held), rx)) => match held.send().await {
                    Ok(()) => rx,
                    Err(_) => return node.event_for(target.node),
                },
                None => {
                    let (tx, rx) = oneshot::channel();
                    if let Err(event) = node.place_watch(target, token, &hops, tx).await {
                        return event;
                    }
                    rx
                }
            };
            match rx.await {
                // Its text was cut when it was decoded (`ActorExit`'s serde).
                Ok(answer) => answered(answer),
                Err(oneshot::RecvError::Connection(_)) => node.event_for(target.node),
                // Dropped unanswered: the owner has no such actor, or the link
                // towards it went; which one decides the event.
                Err(_) => match node.peer(target.node) {
                    Ok(_) => WatchEvent::GONE,
                    Err(_) => node.event_for(target.node),
                },
            }
        })
    }

    /// Sends a watch of the remote `target` towards its owner, connecting
    /// to it if it is a member; if that cannot be done, why the actor
    /// cannot be reached.
    async fn place_watch(
        self: &Arc<Self>,
        target: ActorId,
        token: Token,
        hops: &Hops,
        stopped: Watcher,
    ) -> Result<(), WatchEvent> {
        let next = match self.reach(target.node).await {
            Ok(owner) => Ok((owner, Hops::default())),
            Err(e) => self.next_hop(target.node, hops, None).map_err(|_| e),
        };
        let (hop, hops) = match next {
            Ok(next) => next,
            Err(RemoteError::NodeRestarted(_)) => return Err(WatchEvent::NodeRestarted),
            Err(_) => return Err(self.event_for(target.node)),
        };
        if hop.control.send(Control::Watch { target, token, stopped, hops }).await.is_err() {
            return Err(self.event_for(target.node));
        }
        Ok(())
    }

    fn event_for(&self, node: NodeId) -> WatchEvent {
        match self.why_unreachable(node) {
            RemoteError::NodeRestarted(_) => WatchEvent::NodeRestarted,
            RemoteError::NodeLeft(_) => WatchEvent::NodeLeft,
            _ => WatchEvent::NodeLost,
        }
    }

    /// Shuts the node down (see the module docs); idempotent.
    pub(crate) async fn shutdown(&self) {
        let (listeners, mut watching) = {
            let mut st = self.lock();
            st.closing = true;
            (std::mem::take(&mut st.listeners), std::mem::take(&mut st.watching))
        };
        self.shutdown.send_replace(Phase::Closing);
        for l in listeners {
            let _ = l.await;
        }
        // Actors that stopped without this node hearing yet are heard now,
        // so their watchers are told before the goodbye.
        let unheard = self.lock().registry.stopped_unheard();
        for id in unheard {
            self.actor_stopped(id);
        }
        watching.shutdown().await;
        // As the task's own would have been, the waits are dropped with it
        // (releasing what the adapters' futures hold).
        let waits = std::mem::take(&mut *self.stop_watch.waits.lock().unwrap_or_else(|e| e.into_inner()));
        drop(waits);
        let services = std::mem::take(&mut self.lock().services);
        for s in services {
            let _ = s.await;
        }
        let mut stopping = std::mem::take(&mut self.lock().stopping);
        while stopping.join_next().await.is_some() {}
        // Each serving task says goodbye on its connection once what is
        // queued went out (the stop notices above included), and ends with it.
        self.shutdown.send_replace(Phase::Goodbye);
        let mut serving = std::mem::take(&mut self.lock().serving);
        while serving.join_next().await.is_some() {}
        self.peers_changed.notify_waiters();
        self.supervisor.stop();
        self.supervisor.stopped().await;
    }
}

/// What the owner's answer to a watch means.
fn answered(answer: Result<ActorExit, RemoteError>) -> WatchEvent {
    match answer {
        Ok(exit) => exit.into(),
        Err(RemoteError::Forbidden) => WatchEvent::Forbidden,
        Err(_) => WatchEvent::GONE,
    }
}

impl Drop for NodeInner {
    /// The last handle went without `shutdown`: the same, as far as can be
    /// done without waiting. Every connection says goodbye; listeners and
    /// other tasks stop at their next turn (their sets abort them).
    fn drop(&mut self) {
        let st = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        st.closing = true;
        for conn in st.peers.connections() {
            conn.shared().close(CLOSE_NODE_LEFT, "node shut down");
        }
        for l in st.listeners.drain(..) {
            l.abort();
        }
        self.supervisor.stop();
    }
}

/// The task serving one connection's control messages.
struct Serve {
    node: Weak<NodeInner>,
    peer: NodeId,
    conn: Connection,
    control: mpsc::Sender<Control>,
    incoming: mpsc::Receiver<Control>,
    /// Told whether the connection is usable, once that is known.
    ready: Option<tokio::sync::oneshot::Sender<bool>>,
    /// Whether the connection is in the peer table (the decider's side puts
    /// it there at once; the other side once the decider's hello says so).
    kept: bool,
}

impl Serve {
    /// Serves until the connection ends, or says goodbye on it when
    /// `shutdown` resolves.
    async fn run(mut self, shutdown: impl std::future::Future<Output = ()> + Send + 'static) {
        tokio::pin!(shutdown);
        loop {
            let msg = tokio::select! {
                msg = self.incoming.recv() => msg,
                () = &mut shutdown => {
                    // What is queued goes out first, then the goodbye; a peer
                    // that does not take it is given the handshake timeout.
                    let limit = self.node.upgrade().map_or(Duration::from_secs(5), |n| n.cfg.handshake_timeout);
                    // Boxed: only a node that shuts down needs its state, and
                    // inline it would be part of every idle connection's task.
                    let goodbye = Box::pin(self.conn.close_with(CLOSE_NODE_LEFT, "node shut down"));
                    let _ = tokio::time::timeout(limit, goodbye).await;
                    return;
                }
            };
            let msg = match msg {
                Ok(Some(msg)) => msg,
                Ok(None) | Err(crate::RecvError::Connection(_)) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "bad control message");
                    continue;
                }
            };
            let Some(node) = self.node.upgrade() else { return };
            if let Control::Hello { keep, .. } = &msg {
                if !self.kept && !self.decided(&node, *keep) {
                    return;
                }
            }
            let is_hello = matches!(msg, Control::Hello { .. });
            if let Control::Hello { name: Some(name), .. } = &msg {
                self.conn.shared().span.record("peer_name", name.as_str());
            }
            node.handle(self.peer, msg);
            // Only once the hello is handled (a restart of a named peer
            // noted), so that `connect` returns to a node that already knows.
            if is_hello {
                if let Some(ready) = self.ready.take() {
                    let _ = ready.send(true);
                }
            }
        }
        if let Some(node) = self.node.upgrade() {
            node.peer_lost(self.peer, &self.conn);
        }
    }

    /// The decider said whether this connection is kept; false if not (it
    /// is closed, and the caller waits for the kept one).
    fn decided(&mut self, node: &Arc<NodeInner>, keep: bool) -> bool {
        if keep {
            let mut st = node.lock();
            if !st.closing {
                let peer = Peer { conn: self.conn.clone(), control: self.control.clone() };
                node.take_peer(&mut st, self.peer, peer);
                self.kept = true;
                let _ = self.control.try_send(Control::Hello { name: node.name.clone(), keep: false });
                return true;
            }
        }
        tracing::debug!("the peer keeps another connection with us");
        self.conn.shared().close(CLOSE_DUPLICATE, "another connection with this node is kept");
        if let Some(ready) = self.ready.take() {
            let _ = ready.send(false);
        }
        false
    }
}
