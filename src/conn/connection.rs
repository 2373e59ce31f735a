//! [`Connection`]: the handle users and the layers above hold, and how one
//! is made (dial, accept, handshake, then supervisor and driver).

use std::sync::Arc;
use std::time::Instant;

use super::dial::{self, Dialer};
use super::error::{ConnectError, ConnectionError};
use super::handshake;
use super::recovery::ConnectionEvent;
use super::shared::{Parts, Shared};
use super::supervisor::{Args, Parent};
use crate::config::Config;
use crate::mux::{Mux, MuxConfig, MuxStats, Side};
use crate::transport::{self, Transport};
use crate::NodeId;

/// Which part a side plays in a connection's handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The side that dialed: it speaks first and may resume the session.
    Dial,
    /// The side that accepted.
    Accept,
}

/// A live connection to one peer.
///
/// Cloning is cheap. The connection stays open while any clone or any
/// channel end bound to it lives; when the last goes, it closes itself with
/// a goodbye. [`Connection::close`] ends it at once.
pub struct Connection {
    shared: Arc<Shared>,
}

/// A connection's counters, readable after it ended (it does not hold the
/// connection open as a [`Connection`] handle does).
#[cfg(feature = "metrics")]
pub(crate) struct Counters(Arc<Shared>);

#[cfg(feature = "metrics")]
impl Counters {
    pub(crate) fn stats(&self) -> ConnectionStats {
        stats_of(&self.0)
    }

    /// Tells one connection from another for as long as this is held.
    pub(crate) fn key(&self) -> usize {
        Arc::as_ptr(&self.0) as usize
    }
}

fn stats_of(shared: &Shared) -> ConnectionStats {
    use std::sync::atomic::Ordering::Relaxed;
    let MuxStats { open_ports, send_queued, recv_buffered, replay_bytes, totals, rtt, .. } = shared.lock().mux.stats();
    ConnectionStats {
        open_ports,
        send_queued,
        recv_buffered,
        replay_bytes,
        refused: shared.refused.load(Relaxed),
        messages_out: totals.messages_out,
        bytes_out: totals.bytes_out,
        messages_in: totals.messages_in,
        bytes_in: totals.bytes_in,
        rtt,
        reconnects: shared.reconnects.load(Relaxed),
        resumes: shared.resumes.load(Relaxed),
        full: totals.full,
        undecodable: shared.undecodable.load(Relaxed),
        unread: totals.unread,
    }
}

impl Clone for Connection {
    fn clone(&self) -> Self {
        Connection::hold(self.shared.clone())
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.shared.release();
    }
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
    /// Messages to the peer's actors that the node refused to queue because
    /// its outboxes were full
    /// ([`Config::max_outbox`](crate::Config::max_outbox)): posts that got
    /// `Full`, such as an actix `do_send` past the cap.
    pub refused: u64,
    /// Messages queued to the peer since the connection began (each once,
    /// however often a resume replays it).
    pub messages_out: u64,
    /// Their encoded bytes.
    pub bytes_out: u64,
    /// Messages received from the peer.
    pub messages_in: u64,
    /// Their encoded bytes.
    pub bytes_in: u64,
    /// Round-trip time measured by the connection's pings, smoothed as TCP
    /// smooths it; `None` until the first ping is answered (pings go every
    /// [`Config::ping_interval`](crate::Config::ping_interval)).
    pub rtt: Option<std::time::Duration>,
    /// Times this side started reconnecting after its transport broke
    /// (each attempt counts).
    pub reconnects: u64,
    /// Times the session was resumed on a new transport.
    pub resumes: u64,
    /// Sends refused with `Full` because the send buffers
    /// ([`Config::send_buffer`](crate::Config::send_buffer),
    /// [`Config::conn_send_buffer`](crate::Config::conn_send_buffer)) were
    /// full: each `try_send` or `try_tell` that got `Full` there, each post
    /// that went to the outbox instead, and each `send` that had to wait for
    /// room (once, however long it waited). Backpressure at work, not loss.
    pub full: u64,
    /// Received messages that did not decode as their channel's type
    /// (another version of the message type, say): each was logged and
    /// dropped, and its channel went on. A receiver of the channel saw
    /// [`RecvError::Decode`](crate::RecvError::Decode); a message for an
    /// exported actor is lost.
    pub undecodable: u64,
    /// Messages between this node and the peer that no one read: their
    /// channel's reader closed first (a route into an actor that stopped,
    /// a dropped receiver), so they were dropped — Akka's dead letters. Each
    /// is counted once, by the side that held it: received whole here and
    /// not read, or queued here for the peer and never sent because the
    /// peer's reader had closed.
    pub unread: u64,
}

impl Connection {
    /// A new handle on `shared`.
    pub(crate) fn hold(shared: Arc<Shared>) -> Connection {
        shared.hold();
        Connection { shared }
    }

    /// Dials: runs the handshake on `io` as the connecting side and starts
    /// the connection's driver on the current tokio runtime. The connection
    /// ends with its transport; see [`Connection::dial`] for one that
    /// reconnects.
    pub async fn connect<T: Transport>(io: T, cfg: Config) -> Result<Connection, ConnectError> {
        cfg.validate()?;
        Self::establish(io, cfg, Role::Dial, crate::node_id(), None).await
    }

    /// Accepts: runs the handshake on `io` as the accepting side. The
    /// connection ends with its transport; see [`Acceptor`](crate::Acceptor)
    /// for sessions that dialers can resume.
    pub async fn accept<T: Transport>(io: T, cfg: Config) -> Result<Connection, ConnectError> {
        cfg.validate()?;
        Self::establish(io, cfg, Role::Accept, crate::node_id(), None).await
    }

    /// Dials with `dial` and keeps the session alive across broken
    /// transports: when the transport fails or goes silent, `dial` is called
    /// again (with backoff, per [`Config::reconnect`]) and the session
    /// resumes where it stopped, every message delivered exactly once and in
    /// order. The peer must accept through an [`Acceptor`](crate::Acceptor).
    pub async fn dial<F, Fut, T>(dial: F, cfg: Config) -> Result<Connection, ConnectError>
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = std::io::Result<T>> + Send + 'static,
        T: Transport,
    {
        cfg.validate()?;
        let dial = dial::dialer(dial);
        let io = dial::first_dial(&dial, cfg.handshake_timeout).await?;
        let recover = Args::Dial { policy: cfg.reconnect.clone(), dial };
        Self::dial_once(io, cfg, crate::node_id(), recover, None, None).await
    }

    /// A connection without recovery, on behalf of the node `local`;
    /// `cfg` was validated by the caller.
    pub(crate) async fn establish<T: Transport>(
        mut io: T,
        cfg: Config,
        role: Role,
        local: NodeId,
        parent: Option<&Parent>,
    ) -> Result<Connection, ConnectError> {
        match role {
            Role::Dial => Self::dial_once(io, cfg, local, Args::None, parent, None).await,
            Role::Accept => {
                transport::tune(&io);
                let addr = transport::peer_addr(&io);
                let session = uuid::Uuid::new_v4();
                let peer = handshake::server(&mut io, &cfg, local.0, |_| (session, 0)).await.inspect_err(
                    |e| tracing::warn!(addr = addr.as_deref().unwrap_or("?"), error = %e, "handshake failed"),
                )?;
                Ok(Self::start(io, cfg, Side::Server, local, session, peer, Args::None, parent, addr).await)
            }
        }
    }

    /// A node's dial of `addr`: recovery as its configuration says
    /// (validated by the node).
    pub(crate) async fn dial_as(
        dial: Dialer,
        addr: String,
        cfg: Config,
        local: NodeId,
        parent: Option<&Parent>,
    ) -> Result<Connection, ConnectError> {
        let io = dial::first_dial(&dial, cfg.handshake_timeout).await?;
        let recover =
            if cfg.reconnect.enabled { Args::Dial { policy: cfg.reconnect.clone(), dial } } else { Args::None };
        Self::dial_once(io, cfg, local, recover, parent, Some(addr)).await
    }

    async fn dial_once<T: Transport>(
        mut io: T,
        cfg: Config,
        local: NodeId,
        recover: Args,
        parent: Option<&Parent>,
        addr: Option<String>,
    ) -> Result<Connection, ConnectError> {
        transport::tune(&io);
        let addr = addr.or_else(|| transport::peer_addr(&io));
        let resumable = matches!(recover, Args::Dial { .. });
        let peer = handshake::client(&mut io, &cfg, local.0, uuid::Uuid::nil(), 0, resumable)
            .await
            .inspect_err(|e| tracing::warn!(addr = addr.as_deref().unwrap_or("?"), error = %e, "handshake failed"))?;
        let session = peer.hello.session_id;
        Ok(Self::start(io, cfg, Side::Client, local, session, peer, recover, parent, addr).await)
    }

    /// Builds the connection's state after a handshake and starts driving
    /// it. Its supervisor (linked to `parent`, a node's actor, if given) is
    /// spawned when it is first needed. `addr` names the far end in logs.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn start<T: Transport>(
        io: T,
        cfg: Config,
        side: Side,
        local: NodeId,
        session: uuid::Uuid,
        peer: handshake::PeerHello,
        recover: Args,
        parent: Option<&Parent>,
        addr: Option<String>,
    ) -> Connection {
        let mux_cfg = MuxConfig {
            local: cfg.hello_limits(),
            peer: peer.hello.limits,
            chunk_size: cfg.chunk_size,
            send_buffer: cfg.send_buffer,
            conn_send_buffer: cfg.conn_send_buffer,
            ping_interval: cfg.ping_interval,
            idle_timeout: cfg.idle_timeout,
            accepts: cfg.compression.accepts(),
        };
        // Agreed once for the session: a resume reconnects the same two
        // processes, with the same configurations.
        let packer = cfg.compression.packer(peer.hello.accepts, peer.hello.limits.max_message);
        let peer_id = NodeId(peer.hello.node_id);
        // A root: the connection outlives whatever request dialed it, and
        // a child would hold that request's span open (and in its trace)
        // for as long as the connection lives.
        let span = tracing::info_span!(
            parent: None,
            "connection",
            peer = %peer_id,
            peer_name = tracing::field::Empty,
            addr = addr.as_deref().unwrap_or("?"),
            side = side.name(),
            %session,
        );
        let shared = Shared::new(Parts {
            mux: Mux::new(side, mux_cfg, Instant::now()),
            peer_id,
            local_id: local,
            session,
            recover,
            packer,
            parent: parent.cloned(),
            cfg,
            span,
        });
        tracing::debug!(parent: &shared.span, resumable = shared.resumable(), "connection established");
        let conn = Connection::hold(shared);
        let generation = conn.shared.start_driver(io, peer.rest);
        debug_assert_eq!(generation, 1, "the supervisor expects the first transport");
        conn
    }

    /// Lifecycle events from now on (a slow subscriber misses old ones).
    pub fn events(&self) -> tokio::sync::broadcast::Receiver<ConnectionEvent> {
        self.shared.subscribe()
    }

    /// The peer's node id.
    pub fn peer_id(&self) -> NodeId {
        self.shared.peer_id
    }

    /// Counters, for monitoring and tests.
    pub fn stats(&self) -> ConnectionStats {
        stats_of(&self.shared)
    }

    /// Reads this connection's counters without holding it open: for a
    /// sampler that reads them once more after the connection ended.
    #[cfg(feature = "metrics")]
    pub(crate) fn counters(&self) -> Counters {
        Counters(self.shared.clone())
    }

    /// Counts a message to the peer refused by the node above.
    pub(crate) fn count_refused(&self) {
        self.shared.refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Closes the connection gracefully: what is queued is sent, then a
    /// goodbye, and the transport is shut down. Receivers on both sides see
    /// the end of their streams; later sends fail with `Closed`. Resolves
    /// once the connection has ended.
    pub async fn close(&self) {
        self.close_with(0, "closed by application").await
    }

    /// [`Connection::close`] with a close code and reason the peer sees
    /// ([`ConnectionError::PeerClosed`]).
    pub(crate) async fn close_with(&self, code: u32, reason: &str) {
        self.shared.close(code, reason);
        self.closed().await;
    }

    /// Turns true once the connection has ended; holds no part of it.
    pub(crate) fn ended(&self) -> tokio::sync::watch::Receiver<bool> {
        self.shared.ended()
    }

    /// Resolves once the connection has ended, with the reason.
    pub async fn closed(&self) -> ConnectionError {
        let mut ended = self.shared.ended();
        let _ = ended.wait_for(|e| *e).await;
        self.error().unwrap_or(ConnectionError::Closed)
    }

    /// The error that ended the connection, once it has ended.
    pub fn error(&self) -> Option<ConnectionError> {
        self.shared.lock().error.clone()
    }

    /// Whether a transport carries the session now (false while a broken
    /// one waits to be replaced, and once the connection ended).
    pub fn is_link_up(&self) -> bool {
        self.shared.lock().link_up
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }
}
