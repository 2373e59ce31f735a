//! The supervisor: one ractor actor per connection, a thin shell that runs
//! the connection's [`Recovery`] state machine.
//!
//! The driver (a plain tokio task, the data path) reports its end here as a
//! [`SupervisorMsg::LinkFailed`]; the shell feeds it to the state machine with
//! the time, carries out what the machine asks for (emit an event, dial and
//! resume, end the connection) and wakes it when its timer is due. Messages
//! between the two peers never pass through its mailbox.
//!
//! The actor is spawned by the first message it is sent ([`Supervision`]):
//! a connection whose transport never failed has nothing to supervise, and
//! an idle connection is cheaper without an actor's mailbox and task.
//!
//! A node's connections' supervisors are linked to a node-level actor
//! ([`NodeSupervisor`], spawned by the first of them), which fails a
//! connection whose supervisor panicked. A connection made without a node
//! gets an unlinked supervisor, watched by a small task that fails the
//! connection if the actor dies while it is up.

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

/// Messages a supervisor being spawned can be told before it is up. Each
/// needs a transport to fail or a dialer to come back; a spawn takes
/// microseconds.
pub(crate) const PENDING_MAX: usize = 8;

/// A connection's supervisor actor, spawned by the first message it is sent:
/// until its transport first fails (or a dialer comes back) a connection has
/// nothing to supervise, and an actor with its mailbox and task costs about
/// 9 KB per connection end — more than the rest of an idle connection.
pub(crate) enum Supervision {
    /// Not spawned yet: what spawning it takes.
    Dormant(Box<Dormant>),
    /// Being spawned; what it is told meanwhile waits here, in order (at
    /// most [`PENDING_MAX`]).
    Spawning(Vec<SupervisorMsg>),
    Running(ActorRef<SupervisorMsg>),
    /// The connection ended, or the actor could not be spawned.
    Gone,
}

/// What spawning a connection's supervisor takes.
pub(crate) struct Dormant {
    args: Args,
    parent: Option<Parent>,
}

impl Supervision {
    pub(crate) fn new(args: Args, parent: Option<Parent>) -> Supervision {
        Supervision::Dormant(Box::new(Dormant { args, parent }))
    }
}

/// The transport generation a connection starts with; its supervisor's
/// recovery starts there, however late it is spawned (a later transport
/// came with a message the supervisor still gets).
const FIRST_GENERATION: u64 = 1;

/// Spawns the supervisor of `shared` (which is `Spawning`), linked to the
/// node's actor if it has one, and hands it what it was told meanwhile.
pub(super) async fn start(shared: Arc<Shared>, dormant: Dormant) {
    /// Whatever stops the spawn (a failure, the runtime dropping this
    /// task) leaves the connection to end with its transport.
    struct Unstarted(Option<Arc<Shared>>);
    impl Drop for Unstarted {
        fn drop(&mut self) {
            if let Some(shared) = self.0.take() {
                shared.supervisor_failed_to_start();
            }
        }
    }
    let mut unstarted = Unstarted(Some(shared.clone()));
    let (policy, dial) = dormant.args.split();
    let state = State { shared: Arc::downgrade(&shared), recovery: Recovery::new(policy, FIRST_GENERATION), dial };
    // A node that stopped its actor is going away: its connections' late
    // supervisors run unlinked, watched like a bare connection's.
    let parent = match &dormant.parent {
        Some(p) => p.cell().await.map(|cell| (p, cell)),
        None => None,
    };
    let spawned = match &parent {
        Some((_, cell)) => ConnSupervisor::spawn_linked(None, ConnSupervisor, state, cell.clone()).await,
        None => ConnSupervisor::spawn(None, ConnSupervisor, state).await,
    };
    let (actor, handle) = match spawned {
        Ok(spawned) => spawned,
        Err(e) => {
            tracing::warn!(parent: &shared.span, error = %e, "cannot spawn the connection supervisor");
            return;
        }
    };
    match parent {
        Some((p, _)) => {
            p.0.conns.lock().unwrap_or_else(|e| e.into_inner()).insert(actor.get_id(), Arc::downgrade(&shared));
        }
        None => {
            let weak = Arc::downgrade(&shared);
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
    unstarted.0 = None;
    tracing::debug!(parent: &shared.span, "supervisor started");
    shared.supervisor_started(actor);
}

/// Where a node's connection supervisors are spawned: linked to the node's
/// actor, which knows their connections. The node's actor is itself spawned
/// by the first supervisor that needs it: a node whose connections never
/// failed has none.
#[derive(Clone, Default)]
pub(crate) struct Parent(Arc<ParentInner>);

#[derive(Default)]
struct ParentInner {
    /// The node's actor, once spawned (`None` if the runtime refused).
    actor: tokio::sync::OnceCell<Option<ActorCell>>,
    /// Set by [`Parent::stop`]: no actor is spawned after it.
    stopped: std::sync::atomic::AtomicBool,
    conns: Conns,
}

/// The connections whose supervisors a node's actor is the parent of.
type Conns = Arc<Mutex<HashMap<ActorId, Weak<Shared>>>>;

impl Parent {
    /// The node's actor, spawned now if need be; `None` once the node
    /// stopped it, or if the runtime refuses.
    async fn cell(&self) -> Option<ActorCell> {
        use std::sync::atomic::Ordering::SeqCst;
        if self.0.stopped.load(SeqCst) {
            return None;
        }
        let spawn = || async {
            match NodeSupervisor::spawn(None, NodeSupervisor, self.0.conns.clone()).await {
                Ok((actor, _)) => Some(actor.get_cell()),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot spawn the node supervisor");
                    None
                }
            }
        };
        let cell = self.0.actor.get_or_init(spawn).await.clone()?;
        // A stop that came while the actor was being spawned missed it.
        if self.0.stopped.load(SeqCst) {
            cell.stop(None);
            return None;
        }
        Some(cell)
    }

    /// Stops the node's actor, if there is one, and with it its
    /// connections' supervisors.
    pub(crate) fn stop(&self) {
        self.0.stopped.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(Some(cell)) = self.0.actor.get() {
            cell.stop(None);
        }
    }

    /// Resolves once the node's actor has stopped (at once if it never
    /// ran).
    pub(crate) async fn stopped(&self) {
        if let Some(Some(cell)) = self.0.actor.get() {
            let _ = cell.wait(None).await;
        }
    }

    /// Whether the node's actor was spawned (for tests).
    #[cfg(test)]
    pub(crate) fn is_spawned(&self) -> bool {
        self.0.actor.get().is_some()
    }
}

/// A node's actor: parent of its connections' supervisors.
pub(crate) struct NodeSupervisor;

impl Actor for NodeSupervisor {
    type Msg = ();
    type State = Conns;
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
    use std::sync::Mutex;
    use std::time::Duration;

    use tokio::net::{TcpListener, TcpStream};

    use super::*;
    use crate::{Accepted, Acceptor, Config, Connection, ConnectionEvent};

    const T: Duration = Duration::from_secs(10);

    async fn pair() -> (Connection, Connection) {
        let (a, b) = crate::transport::memory(64 * 1024);
        tokio::try_join!(Connection::connect(a, Config::default()), Connection::accept(b, Config::default())).unwrap()
    }

    /// An idle connection has no supervisor actor; its first broken
    /// transport spawns one, which recovers the session, and which ends
    /// with the connection: no actor outlives what it supervises.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_supervisor_is_spawned_by_the_first_broken_transport_and_ends_with_its_connection() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = Acceptor::new(Config::default()).unwrap();
        let (accepted_tx, mut accepted) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (acceptor, accepted_tx) = (acceptor.clone(), accepted_tx.clone());
                tokio::spawn(async move { accepted_tx.send(acceptor.accept(stream).await) });
            }
        });
        // Each dialed socket's twin, to cut it from outside.
        let sockets = Arc::new(Mutex::new(Vec::<std::net::TcpStream>::new()));
        let kept = sockets.clone();
        let dial = move || {
            let kept = kept.clone();
            async move {
                let stream = TcpStream::connect(addr).await?.into_std()?;
                kept.lock().unwrap().push(stream.try_clone()?);
                TcpStream::from_std(stream)
            }
        };
        let client = Connection::dial(dial, Config::default()).await.unwrap();
        let Ok(Accepted::New(server)) = accepted.recv().await.unwrap() else { panic!("a new session") };
        let (tx, _) = client.root::<u32, ()>().unwrap();
        let (_, mut rx) = server.root::<(), u32>().unwrap();
        tx.send(1).await.unwrap();
        assert_eq!(rx.recv().await.unwrap(), Some(1));
        assert!(!client.shared().supervisor_spawned() && !server.shared().supervisor_spawned(), "idle, none yet");

        let mut events = client.events();
        sockets.lock().unwrap()[0].shutdown(std::net::Shutdown::Both).unwrap();
        loop {
            match tokio::time::timeout(T, events.recv()).await.expect("the session resumes").unwrap() {
                ConnectionEvent::Resumed => break,
                ConnectionEvent::SessionLost(why) => panic!("session lost: {why}"),
                _ => {}
            }
        }
        let Ok(Accepted::Resumed(_)) = accepted.recv().await.unwrap() else { panic!("the dialer resumed") };
        tx.send(2).await.unwrap();
        assert_eq!(rx.recv().await.unwrap(), Some(2), "the session goes on");
        let actors = [client.shared().supervisor_actor(), server.shared().supervisor_actor()];
        let [Some(dialer), Some(lingerer)] = actors else { panic!("both ends supervised after the break") };

        client.close().await;
        for actor in [dialer, lingerer] {
            tokio::time::timeout(T, actor.wait(None))
                .await
                .expect("the supervisor stops once its connection closed")
                .unwrap();
        }
    }

    /// A supervisor that panics fails its connection: nothing would recover
    /// or end it any more, so its handles are told at once.
    #[tokio::test]
    async fn a_panicking_supervisor_fails_its_connection() {
        let (c, _s) = pair().await;
        c.shared().panic_supervisor();
        let err = tokio::time::timeout(T, c.closed()).await.unwrap();
        assert!(matches!(err, ConnectionError::SupervisorFailed), "{err:?}");
    }
}
