//! A connection: one mux over one transport, driven by one task.
//!
//! Handles (channel ends) share the mux with the driver behind a mutex, as
//! quinn's streams share their connection: a send locks, queues the encoded
//! message and wakes the driver; the driver batches whatever is queued into
//! large writes. No message crosses a task boundary on its own.

mod driver;
pub(crate) mod handshake;
mod session;
mod supervisor;

pub(crate) use crate::mux::Side;
use session::Recovery;
pub(crate) use session::{dialer, Dialer};
pub use session::{Accepted, Acceptor, ConnectionEvent, SessionLost};
pub(crate) use supervisor::{NodeSupervisor, Parent as SupervisorParent};

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Waker;
use std::time::Instant;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::chan::{mpsc, PortHandle};
use crate::codec::CodecKind;
use crate::config::{Config, ConfigError};
use crate::mux::{Event, Mux, MuxConfig, MuxError, MuxStats, ROOT_CLIENT_TO_SERVER, ROOT_SERVER_TO_CLIENT};
use crate::transport::{self, Transport};
use crate::wire::{PortId, WireError};
use crate::NodeId;

/// Why a connection could not be established.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The configuration is inconsistent.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The transport failed.
    #[error("transport error during handshake: {0}")]
    Io(std::io::Error),
    /// The TLS handshake failed (certificate not trusted, no client
    /// certificate where one is required, no common protocol version...).
    #[error("TLS handshake failed: {0}")]
    Tls(#[source] std::io::Error),
    /// The peer closed the transport during the handshake.
    #[error("peer closed the transport during the handshake")]
    Eof,
    /// Connecting, or the handshake after it, did not complete in time
    /// ([`Config::handshake_timeout`] bounds each).
    #[error("connecting or the handshake did not complete within {0:?}")]
    Timeout(std::time::Duration),
    /// The peer's hello is not acceptable (wrong magic or version, or malformed).
    #[error(transparent)]
    Wire(#[from] WireError),
    /// The two sides are configured with different codecs.
    #[error("codec mismatch: ours {ours}, theirs {theirs}")]
    CodecMismatch {
        /// Our codec id.
        ours: u8,
        /// The peer's codec id.
        theirs: u8,
    },
    /// The peer announced limits that cannot work (described in the text).
    #[error("peer announced unusable limits: {0}")]
    BadLimits(String),
    /// One side requires cookie authentication and the other does not
    /// offer it (or offers a scheme this version does not know).
    #[error("authentication mismatch: ours {ours}, theirs {theirs}")]
    AuthMismatch {
        /// Our scheme: "none" or "cookie".
        ours: &'static str,
        /// The peer's scheme: "none", "cookie" or "unknown".
        theirs: &'static str,
    },
    /// The peer's proof of the cluster secret is wrong: it has another
    /// cookie (or none of ours). Nothing of the connection was used.
    #[error("authentication failed: the peer does not know our cookie")]
    AuthFailed,
    /// The dialer asked to resume a session this side does not have (it
    /// expired, or this node is a new incarnation); it was told so and the
    /// transport closed.
    #[error("the dialer asked to resume an unknown session")]
    UnknownSession,
}

impl From<std::io::Error> for ConnectError {
    fn from(e: std::io::Error) -> Self {
        match crate::transport::TlsFailure::unwrap(e) {
            Ok(tls) => ConnectError::Tls(tls),
            Err(e) => ConnectError::Io(e),
        }
    }
}

/// Why an established connection ended.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectionError {
    /// The transport failed.
    #[error("transport error: {0}")]
    Io(Arc<std::io::Error>),
    /// The peer closed the transport without saying goodbye.
    #[error("transport closed by peer")]
    Eof,
    /// The peer broke the protocol, went silent, or closed the connection.
    #[error(transparent)]
    Protocol(#[from] MuxError),
    /// The connection was closed (locally, or the peer said goodbye).
    #[error("connection closed")]
    Closed,
    /// The task driving the connection is gone (its runtime shut down).
    #[error("connection driver stopped")]
    DriverGone,
    /// The transport broke and the session could not be resumed.
    #[error("session lost: {0}")]
    SessionLost(SessionLost),
    /// The task driving the connection panicked.
    #[error("connection driver panicked")]
    DriverPanicked,
    /// The connection's supervisor actor failed (it panicked), so nothing
    /// would recover or end the connection any more.
    #[error("connection supervisor failed")]
    SupervisorFailed,
}

impl ConnectionError {
    /// Whether a new transport could carry on where this one stopped: the
    /// transport failed or went silent, not the peer's protocol or will.
    fn is_transport_failure(&self) -> bool {
        matches!(self, ConnectionError::Io(_) | ConnectionError::Eof | ConnectionError::Protocol(MuxError::Timeout(_)))
    }
}

impl ConnectionError {
    fn io(e: std::io::Error) -> Self {
        ConnectionError::Io(Arc::new(e))
    }
}

/// State shared by the driver and every handle of one connection.
pub(crate) struct Shared {
    state: Mutex<State>,
    pub(crate) cfg: Config,
    pub(crate) local_id: NodeId,
    pub(crate) session: uuid::Uuid,
    recovery: Recovery,
    events: tokio::sync::broadcast::Sender<ConnectionEvent>,
    /// Turns true once the connection has ended.
    ended: tokio::sync::watch::Sender<bool>,
    pub(crate) codec: CodecKind,
    pub(crate) peer_id: NodeId,
    /// The node this connection belongs to, if any.
    pub(crate) node: std::sync::OnceLock<std::sync::Weak<crate::node::NodeInner>>,
    /// The actor that owns the connection's recovery.
    supervisor: std::sync::OnceLock<ractor::ActorRef<supervisor::SupervisorMsg>>,
}

pub(crate) struct State {
    pub(crate) mux: Mux,
    pub(crate) driver_waker: Option<Waker>,
    recv_wakers: HashMap<PortId, Waker>,
    send_wakers: HashMap<PortId, Vec<Waker>>,
    pub(crate) error: Option<ConnectionError>,
    root_taken: bool,
    /// Counts transports; a driver of an older one must not touch the mux.
    pub(crate) generation: u64,
    /// A transport is attached and driven.
    pub(crate) link_up: bool,
    driver: Option<tokio::task::AbortHandle>,
}

impl State {
    /// Wakes the handles the mux has news for.
    pub(crate) fn dispatch_events(&mut self) {
        while let Some(ev) = self.mux.poll_event() {
            match ev {
                Event::Readable(port) => {
                    if let Some(w) = self.recv_wakers.remove(&port) {
                        w.wake();
                    }
                }
                Event::Writable(port) => {
                    for w in self.send_wakers.remove(&port).into_iter().flatten() {
                        w.wake();
                    }
                }
            }
        }
    }

    /// Asks the driver to run: there is something to send.
    pub(crate) fn wake_driver(&mut self) -> bool {
        match self.driver_waker.take() {
            Some(w) => {
                w.wake();
                true
            }
            None => false,
        }
    }

    pub(crate) fn register_recv(&mut self, port: PortId, waker: &Waker) {
        match self.recv_wakers.get_mut(&port) {
            Some(w) if w.will_wake(waker) => {}
            Some(w) => w.clone_from(waker),
            None => {
                self.recv_wakers.insert(port, waker.clone());
            }
        }
    }

    pub(crate) fn register_send(&mut self, port: PortId, waker: &Waker) {
        let list = self.send_wakers.entry(port).or_default();
        if !list.iter().any(|w| w.will_wake(waker)) {
            list.push(waker.clone());
        }
    }

    pub(crate) fn forget_port(&mut self, port: PortId) {
        self.recv_wakers.remove(&port);
        self.send_wakers.remove(&port);
    }
}

impl Shared {
    pub(crate) fn node(&self) -> Option<Arc<crate::node::NodeInner>> {
        self.node.get().and_then(|w| w.upgrade())
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves the mux unusable; the
        // poisoned guard is still safe to read, and the driver fails the
        // connection on its next poll.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a broken transport leaves the session waiting to resume.
    pub(crate) fn resumable(&self) -> bool {
        !matches!(self.recovery, Recovery::None)
    }

    pub(crate) fn emit(&self, event: ConnectionEvent) {
        match &event {
            ConnectionEvent::Disconnected(e) => tracing::info!(peer = %self.peer_id, error = %e, "disconnected"),
            ConnectionEvent::Reconnecting { attempt, delay } => {
                tracing::debug!(peer = %self.peer_id, attempt, ?delay, "reconnecting")
            }
            ConnectionEvent::Resumed => tracing::info!(peer = %self.peer_id, "session resumed"),
            ConnectionEvent::SessionLost(why) => tracing::warn!(peer = %self.peer_id, %why, "session lost"),
        }
        let _ = self.events.send(event);
    }

    /// Drives the session over `io`, replacing any previous transport.
    fn start_driver<T: Transport>(self: &Arc<Self>, io: T, rest: bytes::BytesMut) {
        let generation = {
            let mut st = self.lock();
            st.generation += 1;
            st.link_up = true;
            if let Some(old) = st.driver.take() {
                old.abort();
            }
            st.generation
        };
        // Spawned without the lock held: a runtime that is shutting down
        // drops the driver at once, and its drop takes the lock.
        let driver = tokio::spawn(driver::run(driver::Driver::new(io, self.clone(), rest, generation))).abort_handle();
        let mut st = self.lock();
        if st.generation == generation && st.error.is_none() {
            st.driver = Some(driver);
        } else {
            driver.abort();
        }
    }

    /// Takes the session over on a new transport, after the handshake said
    /// how much of ours the peer has, and told it that we had received
    /// `told` frames.
    fn resume<T: Transport>(self: &Arc<Self>, io: T, peer: handshake::PeerHello, told: u64) {
        {
            let mut st = self.lock();
            // Stop the old driver from touching the mux first (it may not
            // have noticed its transport is dead).
            st.generation += 1;
            if let Err(e) = st.mux.resume(peer.hello.resume_received, told, Instant::now()) {
                drop(st);
                tracing::warn!(peer = %self.peer_id, error = %e, "cannot resume");
                self.fail(ConnectionError::SessionLost(SessionLost::Mismatch));
                return;
            }
        }
        self.start_driver(io, peer.rest);
        self.emit(ConnectionEvent::Resumed);
    }

    /// The driver of transport `generation` stopped with `err`: tells the
    /// supervisor, which resumes if the session can outlive it, else ends the
    /// connection. Without a supervisor (it could not be spawned, or the
    /// runtime is shutting down) the connection ends.
    pub(crate) fn link_failed(self: &Arc<Self>, generation: u64, err: ConnectionError) {
        let err = match self.supervisor.get() {
            Some(actor) => match actor.cast(supervisor::SupervisorMsg::LinkFailed { generation, error: err }) {
                Ok(()) => return,
                Err(ractor::MessagingErr::SendErr(supervisor::SupervisorMsg::LinkFailed { error, .. })) => error,
                Err(_) => ConnectionError::DriverGone,
            },
            None => err,
        };
        self.fail_if_current(generation, err);
    }

    /// Ends the connection with `err` unless a newer transport took over.
    pub(crate) fn fail_if_current(&self, generation: u64, err: ConnectionError) {
        let current = {
            let st = self.lock();
            st.generation == generation && st.error.is_none()
        };
        if current {
            self.fail(err);
        }
    }

    /// Ends the connection: every waiting handle is woken and sees `err`.
    pub(crate) fn fail(&self, err: ConnectionError) {
        let mut st = self.lock();
        if st.error.is_some() {
            return;
        }
        match &err {
            ConnectionError::Closed => tracing::debug!(peer = %self.peer_id, "connection closed"),
            e => tracing::warn!(peer = %self.peer_id, error = %e, "connection failed"),
        }
        if let ConnectionError::SessionLost(why) = &err {
            let _ = self.events.send(ConnectionEvent::SessionLost(why.clone()));
        }
        st.error = Some(err);
        st.link_up = false;
        if let Some(d) = st.driver.take() {
            // The driver stops at its next poll; the waker makes that soon.
            drop(d);
        }
        if let Some(w) = st.driver_waker.take() {
            w.wake();
        }
        for (_, w) in st.recv_wakers.drain() {
            w.wake();
        }
        for (_, ws) in st.send_wakers.drain() {
            ws.into_iter().for_each(Waker::wake);
        }
        drop(st);
        self.ended.send_replace(true);
        if let Some(actor) = self.supervisor.get() {
            actor.stop(None);
        }
    }
}

/// A live connection to one peer.
///
/// Cloning is cheap. The connection stays up while any clone or any channel
/// end bound to it lives; [`Connection::close`] ends it at once.
#[derive(Clone)]
pub struct Connection {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection").field("peer", &self.shared.peer_id).finish()
    }
}

/// Counters of one connection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectionStats {
    /// Ports open, including the two root ports.
    pub open_ports: usize,
    /// Message bytes queued for sending and not yet written, plus 64 per
    /// message (what the send buffers count).
    pub send_queued: usize,
    /// Received bytes the connection holds for the application (not
    /// counting up to about 16 KiB per receiver already taken off the
    /// connection ahead of its reads).
    pub recv_buffered: usize,
    /// Bytes kept until the peer acknowledges them.
    pub replay_bytes: usize,
}

impl Connection {
    /// Dials: runs the handshake on `io` as the connecting side and starts
    /// the connection's driver on the current tokio runtime. The connection
    /// ends with its transport; see [`Connection::dial`] for one that
    /// reconnects.
    pub async fn connect<T: Transport>(io: T, cfg: Config) -> Result<Connection, ConnectError> {
        Self::dial_once(io, cfg, crate::node_id(), Recovery::None, None).await
    }

    /// Accepts: runs the handshake on `io` as the accepting side. The
    /// connection ends with its transport; see [`Acceptor`] for sessions
    /// that dialers can resume.
    pub async fn accept<T: Transport>(io: T, cfg: Config) -> Result<Connection, ConnectError> {
        Self::establish(io, cfg, Side::Server, crate::node_id(), None).await
    }

    /// Dials with `dial` and keeps the session alive across broken
    /// transports: when the transport fails or goes silent, `dial` is called
    /// again (with backoff, per [`Config::reconnect`]) and the session
    /// resumes where it stopped, every message delivered exactly once and in
    /// order. The peer must accept through an [`Acceptor`].
    pub async fn dial<F, Fut, T>(dial: F, cfg: Config) -> Result<Connection, ConnectError>
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = std::io::Result<T>> + Send + 'static,
        T: Transport,
    {
        let dial = session::dialer(dial);
        let io = session::first_dial(&dial, &cfg).await?;
        Self::dial_once(io, cfg, crate::node_id(), Recovery::Dial(dial), None).await
    }

    /// A connection without recovery on behalf of the node `local`.
    pub(crate) async fn establish<T: Transport>(
        mut io: T,
        cfg: Config,
        side: Side,
        local: NodeId,
        parent: Option<&SupervisorParent>,
    ) -> Result<Connection, ConnectError> {
        match side {
            Side::Client => Self::dial_once(io, cfg, local, Recovery::None, parent).await,
            Side::Server => {
                cfg.validate()?;
                transport::tune(&io);
                let session = uuid::Uuid::new_v4();
                let peer = handshake::server(&mut io, &cfg, local.0, |_| (session, 0))
                    .await
                    .inspect_err(|e| tracing::warn!(error = %e, "handshake failed"))?;
                Ok(Self::start(io, cfg, Side::Server, local, session, peer, Recovery::None, parent).await)
            }
        }
    }

    /// A node's dial: recovery as its configuration says.
    pub(crate) async fn dial_as(
        dial: session::Dialer,
        cfg: Config,
        local: NodeId,
        parent: Option<&SupervisorParent>,
    ) -> Result<Connection, ConnectError> {
        let io = session::first_dial(&dial, &cfg).await?;
        let recovery = if cfg.reconnect.enabled { Recovery::Dial(dial) } else { Recovery::None };
        Self::dial_once(io, cfg, local, recovery, parent).await
    }

    async fn dial_once<T: Transport>(
        mut io: T,
        cfg: Config,
        local: NodeId,
        recovery: Recovery,
        parent: Option<&SupervisorParent>,
    ) -> Result<Connection, ConnectError> {
        cfg.validate()?;
        transport::tune(&io);
        let resumable = matches!(recovery, Recovery::Dial(_));
        let peer = handshake::client(&mut io, &cfg, local.0, uuid::Uuid::nil(), 0, resumable)
            .await
            .inspect_err(|e| tracing::warn!(error = %e, "handshake failed"))?;
        let session = peer.hello.session_id;
        Ok(Self::start(io, cfg, Side::Client, local, session, peer, recovery, parent).await)
    }

    /// Builds the connection's state after a handshake, spawns its
    /// supervisor (linked to `parent`, a node's actor, if given) and starts
    /// driving it.
    #[allow(clippy::too_many_arguments)]
    async fn start<T: Transport>(
        io: T,
        cfg: Config,
        side: Side,
        local: NodeId,
        session: uuid::Uuid,
        peer: handshake::PeerHello,
        recovery: Recovery,
        parent: Option<&SupervisorParent>,
    ) -> Connection {
        let mux_cfg = MuxConfig {
            local: cfg.hello_limits(),
            peer: peer.hello.limits,
            chunk_size: cfg.chunk_size,
            send_buffer: cfg.send_buffer,
            conn_send_buffer: cfg.conn_send_buffer,
            ping_interval: cfg.ping_interval,
            idle_timeout: cfg.idle_timeout,
        };
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                mux: Mux::new(side, mux_cfg, Instant::now()),
                driver_waker: None,
                recv_wakers: HashMap::new(),
                send_wakers: HashMap::new(),
                error: None,
                root_taken: false,
                generation: 0,
                link_up: false,
                driver: None,
            }),
            ended: tokio::sync::watch::channel(false).0,
            codec: cfg.codec,
            peer_id: NodeId(peer.hello.node_id),
            node: std::sync::OnceLock::new(),
            supervisor: std::sync::OnceLock::new(),
            local_id: local,
            session,
            recovery,
            events: tokio::sync::broadcast::channel(64).0,
            cfg,
        });
        tracing::debug!(peer = %shared.peer_id, ?side, %session, "connection established");
        supervisor::spawn(&shared, parent).await;
        shared.start_driver(io, peer.rest);
        Connection { shared }
    }

    /// Lifecycle events from now on (a slow subscriber misses old ones).
    pub fn events(&self) -> tokio::sync::broadcast::Receiver<ConnectionEvent> {
        self.shared.events.subscribe()
    }

    /// The root channel: the first channel of every connection, from which
    /// all others are reached by sending channel ends inside messages.
    /// `S` is what this side sends, `R` what it receives; the peer uses the
    /// same pair swapped. Returns `None` after the first call.
    pub fn root<S, R>(&self) -> Option<(mpsc::Sender<S>, mpsc::Receiver<R>)>
    where
        S: Serialize + Send + 'static,
        R: DeserializeOwned + Send + 'static,
    {
        let mut st = self.shared.lock();
        if std::mem::replace(&mut st.root_taken, true) {
            return None;
        }
        let (send, recv) = match st.mux.side() {
            Side::Client => (ROOT_CLIENT_TO_SERVER, ROOT_SERVER_TO_CLIENT),
            Side::Server => (ROOT_SERVER_TO_CLIENT, ROOT_CLIENT_TO_SERVER),
        };
        drop(st);
        let tx = mpsc::Sender::from_port(PortHandle::new(self.shared.clone(), send));
        let rx = mpsc::Receiver::from_port(PortHandle::new(self.shared.clone(), recv));
        Some((tx, rx))
    }

    /// The peer's node id.
    pub fn peer_id(&self) -> NodeId {
        self.shared.peer_id
    }

    /// Counters, for monitoring and tests.
    pub fn stats(&self) -> ConnectionStats {
        let MuxStats { open_ports, send_queued, recv_buffered, replay_bytes, .. } = self.shared.lock().mux.stats();
        ConnectionStats { open_ports, send_queued, recv_buffered, replay_bytes }
    }

    /// Closes the connection gracefully: what is queued is sent, then a
    /// goodbye, and the transport is shut down. Receivers on both sides see
    /// the end of their streams; later sends fail with `Closed`. Resolves
    /// once the connection has ended.
    pub async fn close(&self) {
        {
            let mut st = self.shared.lock();
            st.mux.close(0, "closed by application");
            st.wake_driver();
        }
        self.closed().await;
    }

    /// Turns true once the connection has ended; holds no part of it.
    pub(crate) fn ended(&self) -> tokio::sync::watch::Receiver<bool> {
        self.shared.ended.subscribe()
    }

    /// Resolves once the connection has ended, with the reason.
    pub async fn closed(&self) -> ConnectionError {
        let mut ended = self.shared.ended.subscribe();
        let _ = ended.wait_for(|e| *e).await;
        self.error().unwrap_or(ConnectionError::Closed)
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Test hook: the connection's supervisor actor.
    #[cfg(feature = "fault-injection")]
    #[doc(hidden)]
    pub fn __supervisor(&self) -> Option<ractor::ActorCell> {
        self.shared.supervisor.get().map(|a| a.get_cell())
    }

    /// Test hook: makes the connection's supervisor actor panic.
    #[cfg(feature = "fault-injection")]
    #[doc(hidden)]
    pub fn __panic_supervisor(&self) {
        if let Some(a) = self.shared.supervisor.get() {
            let _ = a.cast(supervisor::SupervisorMsg::Panic);
        }
    }

    /// The error that ended the connection, once it has ended.
    pub fn error(&self) -> Option<ConnectionError> {
        self.shared.lock().error.clone()
    }
}
