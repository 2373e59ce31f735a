//! The supervisor: one ractor actor per connection, a thin shell that runs
//! the connection's [`Recovery`] state machine.
//!
//! The driver (a plain tokio task, the data path) reports its end here as a
//! [`SupervisorMsg::LinkFailed`]; the shell feeds it to the state machine with
//! the time, carries out what the machine asks for (emit an event, dial and
//! resume, end the connection) and wakes it when its timer is due. Messages
//! between the two peers never pass through its mailbox.
//!
//! A node spawns its connections' supervisors linked to a node-level actor
//! ([`NodeSupervisor`]), which fails a connection whose supervisor panicked.
//! A connection made without a node gets an unlinked supervisor, watched by
//! a small task that fails the connection if the actor dies while it is up.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use ractor::{Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};

use super::dial::{dial_within, Dialer};
use super::error::{ConnectionError, SessionLost};
use super::handshake;
use super::recovery::{Action, Policy, Recovery};
use super::shared::Shared;
use crate::config::ReconnectPolicy;
use crate::transport;
use crate::NodeId;

/// What the supervisor hears.
pub(crate) enum SupervisorMsg {
    /// The driver of transport `generation` stopped with `error`.
    LinkFailed { generation: u64, error: ConnectionError },
    /// The dialer came back: transport `generation` carries the session.
    Resumed { generation: u64 },
    /// The recovery's timer may be due.
    Tick,
    /// Test hook: panic inside the actor.
    #[cfg(test)]
    Panic,
}

/// How a connection recovers a broken transport, with what it needs for
/// that: a dialing side's policy comes with the means to dial again.
pub(crate) enum Args {
    /// Not at all.
    None,
    /// Dial again with `dial`, as `policy` says.
    Dial { policy: ReconnectPolicy, dial: Dialer },
    /// Wait this long for the dialer to come back.
    Linger(Duration),
}

impl Args {
    /// Whether a broken transport can leave the session waiting to resume.
    pub(crate) fn is_resumable(&self) -> bool {
        !matches!(self, Args::None)
    }

    /// The state machine's policy, and the dialer its shell keeps.
    fn split(self) -> (Policy, Option<Dialer>) {
        match self {
            Args::None => (Policy::None, None),
            Args::Dial { policy, dial } => (Policy::Dial(policy), Some(dial)),
            Args::Linger(d) => (Policy::Linger(d), None),
        }
    }
}

pub(crate) struct ConnSupervisor;

pub(crate) struct State {
    shared: Weak<Shared>,
    recovery: Recovery,
    /// Present exactly when the policy dials (see [`Args::split`]).
    dial: Option<Dialer>,
}

/// The time, from tokio's clock (so that tests can pause it).
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

impl Actor for ConnSupervisor {
    type Msg = SupervisorMsg;
    type State = State;
    type Arguments = State;

    async fn pre_start(&self, _: ActorRef<Self::Msg>, state: State) -> Result<State, ActorProcessingErr> {
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        st: &mut State,
    ) -> Result<(), ActorProcessingErr> {
        let Some(shared) = st.shared.upgrade() else {
            myself.stop(None);
            return Ok(());
        };
        match msg {
            SupervisorMsg::LinkFailed { generation, error } => {
                if shared.link_down(generation) {
                    st.recovery.link_failed(generation, error, now());
                }
            }
            SupervisorMsg::Resumed { generation } => st.recovery.resumed(generation),
            SupervisorMsg::Tick => st.recovery.handle_timeout(now()),
            #[cfg(test)]
            SupervisorMsg::Panic => panic!("supervisor panic injected for testing"),
        }
        run(&myself, &shared, st).await;
        Ok(())
    }
}

/// Carries out what the recovery asks for, then sets its timer.
async fn run(myself: &ActorRef<SupervisorMsg>, shared: &Arc<Shared>, st: &mut State) {
    while let Some(action) = st.recovery.poll_action() {
        match action {
            Action::Emit(event) => shared.emit(event),
            Action::End(error) => shared.fail(error),
            Action::Dial { attempt } => {
                // Only a dialing policy asks to dial, and it comes with a dialer.
                let Some(dial) = &st.dial else { continue };
                match try_resume(shared, dial, attempt).await {
                    Ok(generation) => st.recovery.resumed(generation),
                    Err(None) => st.recovery.dial_failed(now()),
                    Err(Some(lost)) => st.recovery.dial_lost(lost),
                }
            }
        }
    }
    if let Some(at) = st.recovery.poll_timeout() {
        myself.send_after(at.saturating_duration_since(now()), || SupervisorMsg::Tick);
    }
}

/// One reconnection attempt: dial, resume handshake, take the session over.
/// `Err(None)` for a failure another attempt may cure.
async fn try_resume(shared: &Arc<Shared>, dial: &Dialer, attempt: u32) -> Result<u64, Option<SessionLost>> {
    if shared.lock().error.is_some() {
        return Err(None);
    }
    let limit = shared.cfg.handshake_timeout;
    let mut io = match dial_within(dial, limit).await {
        Some(Ok(io)) => io,
        Some(Err(e)) => {
            tracing::debug!(parent: &shared.span, error = %e, attempt, "reconnect failed");
            return Err(None);
        }
        None => {
            tracing::debug!(parent: &shared.span, ?limit, attempt, "reconnect timed out");
            return Err(None);
        }
    };
    transport::tune(&io);
    let received = shared.lock().mux.received_seq();
    let peer = handshake::client(&mut io, &shared.cfg, shared.local_id.0, shared.session, received, true)
        .await
        .map_err(|e| {
            tracing::debug!(parent: &shared.span, error = %e, attempt, "resume handshake failed");
            None
        })?;
    if NodeId(peer.hello.node_id) != shared.peer_id {
        return Err(Some(SessionLost::PeerRestarted));
    }
    if peer.hello.session_id != shared.session {
        return Err(Some(SessionLost::Expired));
    }
    // A mismatch ended the connection already; the recovery hears of it
    // when the supervisor stops.
    shared.resume(io, peer, received).ok_or(None)
}

/// Where a node's connection supervisors are spawned: linked to the node's
/// actor, which knows their connections.
#[derive(Clone)]
pub(crate) struct Parent {
    cell: ActorCell,
    conns: Arc<Mutex<HashMap<ActorId, Weak<Shared>>>>,
}

/// Spawns the supervisor of `shared`, linked to `parent` if given.
pub(crate) async fn spawn(shared: &Arc<Shared>, args: Args, parent: Option<&Parent>) {
    // Spawned before the first transport is driven (so that none of its
    // failures can go unheard): that transport will be the next generation.
    let generation = shared.lock().generation + 1;
    let (policy, dial) = args.split();
    let state = State { shared: Arc::downgrade(shared), recovery: Recovery::new(policy, generation), dial };
    let spawned = match parent {
        Some(p) => ConnSupervisor::spawn_linked(None, ConnSupervisor, state, p.cell.clone()).await,
        None => ConnSupervisor::spawn(None, ConnSupervisor, state).await,
    };
    let (actor, handle) = match spawned {
        Ok(spawned) => spawned,
        Err(e) => {
            // Without a supervisor the connection still ends cleanly when its
            // transport does (Shared::link_failed falls back to failing it).
            tracing::warn!(parent: &shared.span, error = %e, "cannot spawn the connection supervisor");
            return;
        }
    };
    match parent {
        Some(p) => {
            p.conns.lock().unwrap_or_else(|e| e.into_inner()).insert(actor.get_id(), Arc::downgrade(shared));
        }
        None => {
            let weak = Arc::downgrade(shared);
            // Ends with the actor, which ends with the connection.
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
    /// Spawns a node's actor; `None` (logged) if the runtime refuses.
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
    /// Stops the node's actor and, with it, its connections' supervisors.
    pub(crate) fn stop(&self) {
        self.cell.stop(None);
    }

    /// Resolves once the node's actor has stopped.
    pub(crate) async fn stopped(&self) {
        let _ = self.cell.wait(None).await;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Config, Connection};

    async fn pair() -> (Connection, Connection) {
        let (a, b) = crate::transport::memory(64 * 1024);
        tokio::try_join!(Connection::connect(a, Config::default()), Connection::accept(b, Config::default())).unwrap()
    }

    /// Each connection has its own supervisor actor, and the actor ends with
    /// the connection: no task outlives what it supervises.
    #[tokio::test]
    async fn each_connection_has_a_supervisor_that_ends_with_it() {
        let (c, s) = pair().await;
        let sup = c.shared().supervisor.get().expect("a supervisor actor").get_cell();
        assert_ne!(sup.get_id(), s.shared().supervisor.get().unwrap().get_id());
        c.close().await;
        tokio::time::timeout(std::time::Duration::from_secs(10), sup.wait(None))
            .await
            .expect("the supervisor stops once its connection closed")
            .unwrap();
    }

    /// A supervisor that panics fails its connection: nothing would recover
    /// or end it any more, so its handles are told at once.
    #[tokio::test]
    async fn a_panicking_supervisor_fails_its_connection() {
        let (c, _s) = pair().await;
        c.shared().panic_supervisor();
        let err = tokio::time::timeout(std::time::Duration::from_secs(10), c.closed()).await.unwrap();
        assert!(matches!(err, ConnectionError::SupervisorFailed), "{err:?}");
    }
}
