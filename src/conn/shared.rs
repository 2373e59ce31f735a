//! The state one connection's driver and handles share: the mux behind a
//! mutex, the wakers of handles waiting on it, and how the connection ends.
//!
//! Handles (channel ends) share the mux with the driver as quinn's streams
//! share their connection: a send locks, queues the encoded message and
//! wakes the driver; the driver batches whatever is queued into large
//! writes. No message crosses a task boundary on its own.
//!
//! Who keeps a connection open: its handles, counted here ([`Shared::hold`],
//! [`Shared::release`]): every [`Connection`](super::Connection) clone and
//! every channel end bound to one of its ports. The driver, the supervisor
//! and an acceptor's session table hold the state but not the connection:
//! when the last handle goes, the connection closes itself with a goodbye.

use std::any::Any;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::task::Waker;
use std::time::Instant;

use super::error::{ConnectionError, SessionLost};
use super::recovery::ConnectionEvent;
use super::supervisor::{self, Args, Parent, Supervision, SupervisorMsg};
use super::{driver, handshake};
use crate::codec::CodecKind;
use crate::compress::Packer;
use crate::config::Config;
use crate::mux::{Event, Mux, Side, ROOT_CLIENT_TO_SERVER, ROOT_SERVER_TO_CLIENT};
use crate::transport::Transport;
use crate::wire::PortId;
use crate::NodeId;

/// Lifecycle events a subscriber may fall behind by before it misses some.
const EVENTS: usize = 64;

/// The close code of a connection that closed itself because nothing held
/// it any more (see `docs/PROTOCOL.md`, GoAway).
pub(crate) const CLOSE_UNUSED: u32 = 1;

/// State shared by the driver and every handle of one connection.
pub(crate) struct Shared {
    state: Mutex<State>,
    pub(crate) cfg: Config,
    pub(crate) local_id: NodeId,
    pub(crate) session: uuid::Uuid,
    /// Whether a broken transport leaves the session waiting to resume.
    resumable: bool,
    /// Made by the first subscriber: events go only to subscribers there
    /// are at the time, so until one comes there is nothing to keep, and an
    /// idle connection nobody watches does not hold the channel's slots.
    events: OnceLock<tokio::sync::broadcast::Sender<ConnectionEvent>>,
    /// Turns true once the connection has ended.
    ended: tokio::sync::watch::Sender<bool>,
    pub(crate) codec: CodecKind,
    /// How this side compresses what it sends, if the two sides agreed on
    /// an algorithm in the handshake.
    pub(crate) packer: Option<Packer>,
    pub(crate) peer_id: NodeId,
    /// Handles keeping the connection open (see the module docs).
    handles: AtomicUsize,
    /// Posts to the peer's actors this node refused for a full outbox
    /// (counted by the node layer).
    pub(crate) refused: std::sync::atomic::AtomicU64,
    /// Reconnection attempts and resumes, for the stats.
    pub(crate) reconnects: std::sync::atomic::AtomicU64,
    pub(crate) resumes: std::sync::atomic::AtomicU64,
    /// Received messages that did not decode (dropped), for the stats.
    pub(crate) undecodable: std::sync::atomic::AtomicU64,
    /// Whoever took the connection in (a node), opaque at this layer: the
    /// layers above find it again while a message decodes.
    owner: OnceLock<Weak<dyn Any + Send + Sync>>,
    /// The actor that owns the connection's recovery, spawned by the first
    /// message it is sent (see [`Supervision`]). Never locked together with
    /// `state`.
    supervision: Mutex<Supervision>,
    /// The connection's span: its driver runs in it and its events are
    /// logged in it (fields: peer, peer_name once known, addr, side,
    /// session).
    pub(crate) span: tracing::Span,
    /// The driver's read buffer after its last read (for tests).
    #[cfg(test)]
    pub(crate) read_held: AtomicUsize,
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
    pub(super) link_up: bool,
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

/// What a fresh connection's state is made of.
pub(super) struct Parts {
    pub(super) mux: Mux,
    pub(super) cfg: Config,
    pub(super) local_id: NodeId,
    pub(super) peer_id: NodeId,
    pub(super) session: uuid::Uuid,
    /// How the connection recovers a broken transport.
    pub(super) recover: Args,
    /// How this side compresses what it sends.
    pub(super) packer: Option<Packer>,
    /// The node's actor, to link the connection's supervisor to.
    pub(super) parent: Option<Parent>,
    pub(super) span: tracing::Span,
}

impl Shared {
    pub(super) fn new(parts: Parts) -> Arc<Shared> {
        Arc::new(Shared {
            state: Mutex::new(State {
                mux: parts.mux,
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
            codec: parts.cfg.codec,
            packer: parts.packer,
            peer_id: parts.peer_id,
            handles: AtomicUsize::new(0),
            refused: Default::default(),
            reconnects: Default::default(),
            resumes: Default::default(),
            undecodable: Default::default(),
            owner: OnceLock::new(),
            resumable: parts.recover.is_resumable(),
            supervision: Mutex::new(Supervision::new(parts.recover, parts.parent)),
            local_id: parts.local_id,
            session: parts.session,
            events: OnceLock::new(),
            cfg: parts.cfg,
            span: parts.span,
            #[cfg(test)]
            read_held: AtomicUsize::new(usize::MAX),
        })
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves the mux unusable; the
        // poisoned guard is still safe to read, and the driver fails the
        // connection on its next poll.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One more handle keeps the connection open.
    pub(crate) fn hold(&self) {
        self.handles.fetch_add(1, Ordering::Relaxed);
    }

    /// A handle is gone; the last one closes the connection.
    pub(crate) fn release(&self) {
        if self.handles.fetch_sub(1, Ordering::AcqRel) == 1 {
            tracing::debug!(parent: &self.span, "no handle left: closing");
            self.close(CLOSE_UNUSED, "nothing left to carry");
        }
    }

    /// Begins a graceful close: what is queued is sent, then a goodbye with
    /// `code` and `reason`. A session waiting for its transport ends now.
    pub(crate) fn close(&self, code: u32, reason: &str) {
        let mut st = self.lock();
        if !st.link_up {
            drop(st);
            return self.fail(ConnectionError::Closed);
        }
        st.mux.close(code, reason);
        st.wake_driver();
    }

    /// Records the connection's owner, once.
    pub(crate) fn set_owner(&self, owner: Weak<dyn Any + Send + Sync>) {
        let _ = self.owner.set(owner);
    }

    /// The connection's owner, if it has one and it still exists.
    pub(crate) fn owner(&self) -> Option<Arc<dyn Any + Send + Sync>> {
        self.owner.get().and_then(Weak::upgrade)
    }

    /// The root ports (ours to send on, ours to receive on), the first time.
    pub(crate) fn take_root(&self) -> Option<(PortId, PortId)> {
        let mut st = self.lock();
        if std::mem::replace(&mut st.root_taken, true) {
            return None;
        }
        Some(match st.mux.side() {
            Side::Client => (ROOT_CLIENT_TO_SERVER, ROOT_SERVER_TO_CLIENT),
            Side::Server => (ROOT_SERVER_TO_CLIENT, ROOT_CLIENT_TO_SERVER),
        })
    }

    /// Test hook: makes the connection's supervisor actor panic.
    #[cfg(test)]
    pub(crate) fn panic_supervisor(self: &Arc<Self>) {
        let _ = self.supervise(SupervisorMsg::Panic);
    }

    fn supervision(&self) -> MutexGuard<'_, Supervision> {
        self.supervision.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the connection's supervisor actor was spawned (for tests).
    #[cfg(test)]
    pub(crate) fn supervisor_spawned(&self) -> bool {
        !matches!(*self.supervision(), Supervision::Dormant(_))
    }

    /// The supervisor actor, while it runs (for tests).
    #[cfg(test)]
    pub(crate) fn supervisor_actor(&self) -> Option<ractor::ActorCell> {
        match &*self.supervision() {
            Supervision::Running(actor) => Some(actor.get_cell()),
            _ => None,
        }
    }

    /// Tells the connection's supervisor `msg`, spawning the actor first if
    /// this is the first thing it is told. `Err` if there is no supervisor
    /// to tell (any more), with `msg` if it was not consumed.
    pub(crate) fn supervise(self: &Arc<Self>, msg: SupervisorMsg) -> Result<(), Option<SupervisorMsg>> {
        let mut sup = self.supervision();
        match &mut *sup {
            Supervision::Running(actor) => actor.cast(msg).map_err(|e| match e {
                ractor::MessagingErr::SendErr(msg) => Some(msg),
                _ => None,
            }),
            Supervision::Spawning(pending) if pending.len() < supervisor::PENDING_MAX => {
                pending.push(msg);
                Ok(())
            }
            Supervision::Spawning(_) => {
                // Unreachable in practice: each message needs a transport
                // to fail or a dialer to come back, while a spawn takes
                // microseconds. Dropping one could lose the session unseen.
                drop(sup);
                tracing::error!(parent: &self.span, "supervisor told too much before it started");
                self.fail(ConnectionError::SupervisorFailed);
                Err(Some(msg))
            }
            Supervision::Dormant(_) => {
                // Outside a runtime (it is going away) there is no actor to
                // be had; the caller ends the connection.
                let Ok(rt) = tokio::runtime::Handle::try_current() else {
                    *sup = Supervision::Gone;
                    return Err(Some(msg));
                };
                let Supervision::Dormant(dormant) = std::mem::replace(&mut *sup, Supervision::Spawning(vec![msg]))
                else {
                    unreachable!("matched above")
                };
                drop(sup);
                rt.spawn(supervisor::start(self.clone(), *dormant));
                Ok(())
            }
            Supervision::Gone => Err(Some(msg)),
        }
    }

    /// The supervisor actor is up: it gets what it was told meanwhile, in
    /// order; if the connection ended meanwhile, it stops again.
    pub(super) fn supervisor_started(&self, actor: ractor::ActorRef<SupervisorMsg>) {
        let mut sup = self.supervision();
        match std::mem::replace(&mut *sup, Supervision::Gone) {
            Supervision::Spawning(pending) => {
                for msg in pending {
                    let _ = actor.cast(msg);
                }
                *sup = Supervision::Running(actor);
            }
            _ => actor.stop(None),
        }
    }

    /// The supervisor actor could not be spawned: the connection ends when
    /// its transport does, as it would have with the actor.
    pub(super) fn supervisor_failed_to_start(&self) {
        let pending = match std::mem::replace(&mut *self.supervision(), Supervision::Gone) {
            Supervision::Spawning(pending) => pending,
            _ => Vec::new(),
        };
        for msg in pending {
            if let SupervisorMsg::LinkFailed { generation, error } = msg {
                self.fail_if_current(generation, error);
            }
        }
    }

    /// Whether a broken transport leaves the session waiting to resume.
    pub(crate) fn resumable(&self) -> bool {
        self.resumable
    }

    pub(super) fn subscribe(&self) -> tokio::sync::broadcast::Receiver<ConnectionEvent> {
        self.events.get_or_init(|| tokio::sync::broadcast::channel(EVENTS).0).subscribe()
    }

    pub(super) fn ended(&self) -> tokio::sync::watch::Receiver<bool> {
        self.ended.subscribe()
    }

    /// Tells the subscribers, if there are any.
    fn send_event(&self, event: ConnectionEvent) {
        if let Some(events) = self.events.get() {
            let _ = events.send(event);
        }
    }

    pub(super) fn emit(&self, event: ConnectionEvent) {
        match &event {
            ConnectionEvent::Disconnected(e) => tracing::info!(parent: &self.span, error = %e, "disconnected"),
            ConnectionEvent::Reconnecting { attempt, delay } => {
                self.reconnects.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::debug!(parent: &self.span, attempt, ?delay, "reconnecting")
            }
            ConnectionEvent::Resumed => {
                self.resumes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::info!(parent: &self.span, "session resumed")
            }
            ConnectionEvent::SessionLost(why) => tracing::warn!(parent: &self.span, %why, "session lost"),
        }
        self.send_event(event);
    }

    /// Drives the session over `io`, replacing any previous transport.
    /// Returns the new transport's generation.
    pub(super) fn start_driver<T: Transport>(self: &Arc<Self>, io: T, rest: bytes::BytesMut) -> u64 {
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
        let run = driver::run(driver::Driver::new(io, self.clone(), rest, generation));
        let driver = tokio::spawn(tracing::Instrument::instrument(run, self.span.clone())).abort_handle();
        let mut st = self.lock();
        if st.generation == generation && st.error.is_none() {
            st.driver = Some(driver);
        } else {
            driver.abort();
        }
        generation
    }

    /// Takes the session over on a new transport, after the handshake said
    /// how much of ours the peer has, and told it that we had received
    /// `told` frames. Returns the new transport's generation, or `None` if
    /// the positions do not fit (the connection has then ended).
    pub(super) fn resume<T: Transport>(self: &Arc<Self>, io: T, peer: handshake::PeerHello, told: u64) -> Option<u64> {
        {
            let mut st = self.lock();
            // Stop the old driver from touching the mux first (it may not
            // have noticed its transport is dead).
            st.generation += 1;
            if let Err(e) = st.mux.resume(peer.hello.resume_received, told, Instant::now()) {
                drop(st);
                tracing::warn!(parent: &self.span, error = %e, "cannot resume");
                self.fail(ConnectionError::SessionLost(SessionLost::Mismatch));
                return None;
            }
        }
        Some(self.start_driver(io, peer.rest))
    }

    /// The driver of transport `generation` stopped with `err`: tells the
    /// supervisor, which resumes if the session can outlive it, else ends the
    /// connection. Without a supervisor (it could not be spawned, or the
    /// runtime is shutting down) the connection ends.
    pub(crate) fn link_failed(self: &Arc<Self>, generation: u64, err: ConnectionError) {
        let err = match self.supervise(SupervisorMsg::LinkFailed { generation, error: err }) {
            Ok(()) => return,
            Err(Some(SupervisorMsg::LinkFailed { error, .. })) => error,
            Err(_) => ConnectionError::DriverGone,
        };
        self.fail_if_current(generation, err);
    }

    /// Marks transport `generation` as down, if it is still the current one.
    pub(super) fn link_down(&self, generation: u64) -> bool {
        let mut st = self.lock();
        if st.generation != generation || st.error.is_some() {
            return false;
        }
        st.link_up = false;
        st.driver = None;
        true
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
            e if e.is_graceful() => tracing::debug!(parent: &self.span, reason = %e, "connection closed"),
            e => tracing::warn!(parent: &self.span, error = %e, "connection failed"),
        }
        if let ConnectionError::SessionLost(why) = &err {
            self.send_event(ConnectionEvent::SessionLost(why.clone()));
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
        // A supervisor being spawned stops once it is up.
        if let Supervision::Running(actor) = std::mem::replace(&mut *self.supervision(), Supervision::Gone) {
            actor.stop(None);
        }
    }
}
