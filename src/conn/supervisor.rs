//! The supervisor: one ractor actor per connection that owns its recovery.
//!
//! The driver (a plain tokio task, the data path) reports its end here as a
//! [`SupervisorMsg::LinkFailed`]; the supervisor decides whether the session
//! outlives the transport, redials with backoff or waits for the dialer to
//! come back, and ends the connection when it cannot. Messages between the
//! two peers never pass through its mailbox.
//!
//! A node spawns its connections' supervisors linked to a node-level actor
//! ([`NodeSupervisor`]), which fails a connection whose supervisor panicked.
//! A connection made without a node (`Connection::connect`, `accept`,
//! `dial`, a standalone `Acceptor`) gets an unlinked supervisor, watched by a
//! small task that fails the connection if the actor dies while it is up.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use ractor::{Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};

use super::session::{unit_random, ConnectionEvent, Dialer, Recovery, SessionLost};
use super::{handshake, ConnectionError, Shared};
use crate::transport;
use crate::NodeId;

/// Lifecycle commands of one connection.
pub(crate) enum SupervisorMsg {
    /// The driver of transport `generation` stopped with `error`.
    LinkFailed { generation: u64, error: ConnectionError },
    /// Time for reconnection attempt `attempt` (the first was scheduled at `started`).
    Reconnect { attempt: u32, started: Instant },
    /// The linger time of transport `generation` ran out.
    LingerExpired { generation: u64 },
    /// Test hook: panic inside the actor.
    #[cfg(feature = "fault-injection")]
    Panic,
}

pub(crate) struct ConnSupervisor;

impl Actor for ConnSupervisor {
    type Msg = SupervisorMsg;
    type State = Weak<Shared>;
    type Arguments = Weak<Shared>;

    async fn pre_start(
        &self,
        _: ActorRef<Self::Msg>,
        shared: Weak<Shared>,
    ) -> Result<Weak<Shared>, ActorProcessingErr> {
        Ok(shared)
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        shared: &mut Weak<Shared>,
    ) -> Result<(), ActorProcessingErr> {
        let Some(shared) = shared.upgrade() else {
            myself.stop(None);
            return Ok(());
        };
        match msg {
            SupervisorMsg::LinkFailed { generation, error } => link_failed(&myself, &shared, generation, error),
            SupervisorMsg::Reconnect { attempt, started } => reconnect(&myself, &shared, attempt, started).await,
            SupervisorMsg::LingerExpired { generation } => {
                let down = {
                    let st = shared.lock();
                    st.generation == generation && !st.link_up
                };
                if down {
                    shared.fail(ConnectionError::SessionLost(SessionLost::Expired));
                }
            }
            #[cfg(feature = "fault-injection")]
            SupervisorMsg::Panic => panic!("supervisor panic injected for testing"),
        }
        Ok(())
    }
}

/// The driver of transport `generation` stopped with `err`: resume if the
/// session can outlive it, else end the connection.
fn link_failed(myself: &ActorRef<SupervisorMsg>, shared: &Arc<Shared>, generation: u64, err: ConnectionError) {
    {
        let mut st = shared.lock();
        if st.generation != generation || st.error.is_some() {
            return;
        }
        let recoverable = err.is_transport_failure() && !matches!(shared.recovery, Recovery::None);
        if !recoverable {
            drop(st);
            shared.fail(err);
            return;
        }
        st.link_up = false;
        st.driver = None;
    }
    shared.emit(ConnectionEvent::Disconnected(err));
    match &shared.recovery {
        Recovery::Dial(_) => schedule(myself, shared, 1, Instant::now()),
        Recovery::Linger(d) => {
            myself.send_after(*d, move || SupervisorMsg::LingerExpired { generation });
        }
        Recovery::None => unreachable!("checked above"),
    }
}

/// Schedules reconnection attempt `attempt`, or gives up.
fn schedule(myself: &ActorRef<SupervisorMsg>, shared: &Shared, attempt: u32, started: Instant) {
    let policy = &shared.cfg.reconnect;
    if attempt > policy.max_attempts || started.elapsed() >= policy.give_up_after {
        shared.fail(ConnectionError::SessionLost(SessionLost::GaveUp { attempts: attempt - 1 }));
        return;
    }
    let delay = policy.delay(attempt, unit_random());
    shared.emit(ConnectionEvent::Reconnecting { attempt, delay });
    myself.send_after(delay, move || SupervisorMsg::Reconnect { attempt, started });
}

/// One reconnection attempt: dial, resume handshake, take the session over.
async fn reconnect(myself: &ActorRef<SupervisorMsg>, shared: &Arc<Shared>, attempt: u32, started: Instant) {
    let Recovery::Dial(dial) = &shared.recovery else { return };
    if shared.lock().error.is_some() {
        return;
    }
    match try_resume(shared, dial, attempt).await {
        Ok(()) => {}
        Err(Some(lost)) => shared.fail(ConnectionError::SessionLost(lost)),
        Err(None) => schedule(myself, shared, attempt + 1, started),
    }
}

async fn try_resume(shared: &Arc<Shared>, dial: &Dialer, attempt: u32) -> Result<(), Option<SessionLost>> {
    let limit = shared.cfg.handshake_timeout;
    let mut io = match super::session::dial_within(dial, limit).await {
        Some(Ok(io)) => io,
        Some(Err(e)) => {
            tracing::debug!(peer = %shared.peer_id, error = %e, attempt, "reconnect failed");
            return Err(None);
        }
        None => {
            tracing::debug!(peer = %shared.peer_id, ?limit, attempt, "reconnect timed out");
            return Err(None);
        }
    };
    transport::tune(&io);
    let received = shared.lock().mux.received_seq();
    let peer = handshake::client(&mut io, &shared.cfg, shared.local_id.0, shared.session, received, true)
        .await
        .map_err(|e| {
            tracing::debug!(peer = %shared.peer_id, error = %e, attempt, "resume handshake failed");
            None
        })?;
    if NodeId(peer.hello.node_id) != shared.peer_id {
        return Err(Some(SessionLost::PeerRestarted));
    }
    if peer.hello.session_id != shared.session {
        return Err(Some(SessionLost::Expired));
    }
    shared.resume(io, peer, received);
    Ok(())
}

/// Where a node's connection supervisors are spawned: linked to the node's
/// actor, which knows their connections.
#[derive(Clone)]
pub(crate) struct Parent {
    cell: ActorCell,
    conns: Arc<Mutex<HashMap<ActorId, Weak<Shared>>>>,
}

/// Spawns the supervisor of `shared`, linked to `parent` if given.
pub(crate) async fn spawn(shared: &Arc<Shared>, parent: Option<&Parent>) {
    let args = Arc::downgrade(shared);
    let spawned = match parent {
        Some(p) => ConnSupervisor::spawn_linked(None, ConnSupervisor, args, p.cell.clone()).await,
        None => ConnSupervisor::spawn(None, ConnSupervisor, args).await,
    };
    let (actor, handle) = match spawned {
        Ok(spawned) => spawned,
        Err(e) => {
            // Without a supervisor the connection still ends cleanly when its
            // transport does (Shared::link_failed falls back to failing it).
            tracing::warn!(error = %e, "cannot spawn the connection supervisor");
            return;
        }
    };
    match parent {
        Some(p) => {
            p.conns.lock().unwrap_or_else(|e| e.into_inner()).insert(actor.get_id(), Arc::downgrade(shared));
        }
        None => {
            let weak = Arc::downgrade(shared);
            tokio::spawn(async move {
                let _ = handle.await;
                // The actor stops after the connection ended; ending first
                // means it died.
                if let Some(shared) = weak.upgrade() {
                    shared.fail(ConnectionError::SupervisorFailed);
                }
            });
        }
    }
    let _ = shared.supervisor.set(actor);
}

/// A node's actor: parent of its connections' supervisors.
pub(crate) struct NodeSupervisor;

impl NodeSupervisor {
    pub(crate) async fn start() -> Option<Parent> {
        let conns = Arc::new(Mutex::new(HashMap::new()));
        match NodeSupervisor::spawn(None, NodeSupervisor, conns.clone()).await {
            Ok((actor, _)) => Some(Parent { cell: actor.get_cell(), conns }),
            Err(e) => {
                tracing::warn!(error = %e, "cannot spawn the node supervisor");
                None
            }
        }
    }
}

impl Parent {
    pub(crate) fn stop(&self) {
        self.cell.stop(None);
    }
}

impl Actor for NodeSupervisor {
    type Msg = ();
    type State = Arc<Mutex<HashMap<ActorId, Weak<Shared>>>>;
    type Arguments = Self::State;

    async fn pre_start(&self, _: ActorRef<()>, conns: Self::State) -> Result<Self::State, ActorProcessingErr> {
        Ok(conns)
    }

    async fn handle_supervisor_evt(
        &self,
        _: ActorRef<()>,
        event: SupervisionEvent,
        conns: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let (id, failed) = match &event {
            SupervisionEvent::ActorFailed(cell, why) => {
                tracing::error!(actor = %cell.get_id(), error = %why, "connection supervisor failed");
                (cell.get_id(), true)
            }
            SupervisionEvent::ActorTerminated(cell, ..) => (cell.get_id(), false),
            _ => return Ok(()),
        };
        let shared = conns.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
        if let Some(shared) = shared.and_then(|w| w.upgrade()) {
            // A supervisor stops by itself only after its connection ended;
            // either way no one drives recovery any more.
            let err = if failed { ConnectionError::SupervisorFailed } else { ConnectionError::DriverGone };
            shared.fail(err);
        }
        Ok(())
    }
}
