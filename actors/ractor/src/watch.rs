//! Death watch delivered to a local ractor actor.

use ractor::ActorRef;
use tether::{ActorId, RemoteMessage, WatchEvent};

use crate::RemoteActorRef;

/// A death watch set up by [`watch`]. Dropping it leaves the watch in
/// place (like ractor's `monitor`); [`cancel`](Self::cancel) removes it.
#[derive(Debug)]
pub struct Watch {
    task: tokio::task::AbortHandle,
}

impl Watch {
    /// Removes the watch; the watcher gets no message from it afterwards
    /// (one already sent stays in its mailbox).
    pub fn cancel(self) {
        self.task.abort();
    }

    /// Whether the watch is over: its message was sent, it was cancelled,
    /// or the watcher stopped first.
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

/// How a remote actor ended, shaped like ractor's `SupervisionEvent`: what
/// [`watch`] can deliver to a watcher that handles it like a supervisor
/// handles its children's events.
///
/// ractor's `ActorTerminated(cell, state, reason)` and `ActorFailed(cell,
/// error)` become [`ActorTerminated`](Self::ActorTerminated)`(id, reason)`
/// and [`ActorFailed`](Self::ActorFailed)`(id, error)` (a remote actor has
/// no local cell, and its state stays on its node); the other variants are
/// what only a remote actor can suffer. The text is at most 1024 bytes (see
/// [`WatchEvent`]).
///
/// ```
/// # use tether::ActorId;
/// use tether_ractor::RemoteSupervisionEvent;
///
/// fn on_gone(event: RemoteSupervisionEvent) {
///     match event {
///         RemoteSupervisionEvent::ActorTerminated(who, reason) => println!("{who} stopped: {reason:?}"),
///         RemoteSupervisionEvent::ActorFailed(who, error) => println!("{who} failed: {error}"),
///         other => println!("{} unreachable: {other:?}", other.actor_id()),
///     }
/// }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RemoteSupervisionEvent {
    /// The actor stopped, with the reason given to its `stop` (`None` if
    /// none was, or if it was gone before the watch reached its node).
    ActorTerminated(ActorId, Option<String>),
    /// The actor failed: a handler returned this error or panicked with it.
    ActorFailed(ActorId, String),
    /// The actor's node shut down and said goodbye.
    NodeLeft(ActorId),
    /// The actor's node cannot be reached (crashed, or the link is gone).
    NodeLost(ActorId),
    /// The actor's node restarted, and the actor is gone with it.
    NodeRestarted(ActorId),
    /// The ref is not a capability for the actor: its node says nothing.
    Forbidden(ActorId),
}

impl RemoteSupervisionEvent {
    /// The actor the event is about, like ractor's
    /// `SupervisionEvent::actor_id`.
    pub fn actor_id(&self) -> ActorId {
        match self {
            Self::ActorTerminated(id, _)
            | Self::ActorFailed(id, _)
            | Self::NodeLeft(id)
            | Self::NodeLost(id)
            | Self::NodeRestarted(id)
            | Self::Forbidden(id) => *id,
        }
    }

    /// The event for `actor` from what its monitor reported.
    pub fn new(actor: ActorId, event: WatchEvent) -> Self {
        match event {
            WatchEvent::Stopped { reason } => Self::ActorTerminated(actor, reason),
            WatchEvent::Failed { error } => Self::ActorFailed(actor, error),
            WatchEvent::NodeLeft => Self::NodeLeft(actor),
            WatchEvent::NodeRestarted => Self::NodeRestarted(actor),
            WatchEvent::Forbidden => Self::Forbidden(actor),
            // `NodeLost`, and any kind added later: the actor cannot be reached.
            _ => Self::NodeLost(actor),
        }
    }
}

/// What [`watch`] hands the watcher's `to_msg`: the bare [`WatchEvent`], or
/// a [`RemoteSupervisionEvent`] naming the actor; whichever the message
/// variant it builds holds.
pub trait WatchMessage: Send + 'static {
    /// Builds the value from the watched actor and its monitor's event.
    fn from_watch(actor: ActorId, event: WatchEvent) -> Self;
}

impl WatchMessage for WatchEvent {
    fn from_watch(_: ActorId, event: WatchEvent) -> Self {
        event
    }
}

impl WatchMessage for RemoteSupervisionEvent {
    fn from_watch(actor: ActorId, event: WatchEvent) -> Self {
        RemoteSupervisionEvent::new(actor, event)
    }
}

/// Tells the local actor `watcher` once, with the message `to_msg` builds,
/// when `remote` can no longer be reached, and why:
///
/// - [`WatchEvent::Stopped`]: the actor stopped, with the reason given to
///   its `stop` (or was not there any more),
/// - [`WatchEvent::Failed`]: a handler returned an error or panicked,
/// - [`WatchEvent::NodeLeft`]: its node shut down,
/// - [`WatchEvent::NodeLost`]: the connection to its node is gone,
/// - [`WatchEvent::NodeRestarted`]: its node restarted, and the actor with it.
///
/// This is ractor's `monitor` for a remote actor. ractor reports a local
/// child's end as a `SupervisionEvent`; a remote actor cannot be linked,
/// so here the event arrives as an ordinary message of the watcher's own
/// type, holding either a [`WatchEvent`] or, shaped like ractor's event, a
/// [`RemoteSupervisionEvent`]:
///
/// ```
/// # use ractor::ActorRef;
/// # use tether_ractor::RemoteActorRef;
/// # #[derive(serde::Serialize, serde::Deserialize)]
/// # enum CounterMsg {}
/// use tether_ractor::RemoteSupervisionEvent;
///
/// enum WatcherMsg {
///     CounterGone(RemoteSupervisionEvent),
///     // ..
/// }
///
/// // In the watcher's handler, or wherever a tokio runtime runs:
/// fn watch_counter(counter: &RemoteActorRef<CounterMsg>, myself: ActorRef<WatcherMsg>) {
///     tether_ractor::watch(counter, myself, WatcherMsg::CounterGone);
/// }
/// ```
///
/// The watch is sent on its way before this returns (when the connection
/// to the actor's node is up), so an end that comes after is reported with
/// its reason; a watch that reaches the node after the actor ended reports
/// `Stopped` without one. If the watcher stops first, the watch ends
/// quietly. Must be called within a tokio runtime (any ractor handler is).
pub fn watch<M, W, E>(
    remote: &RemoteActorRef<M>,
    watcher: ActorRef<W>,
    to_msg: impl FnOnce(E) -> W + Send + 'static,
) -> Watch
where
    M: RemoteMessage,
    W: ractor::Message,
    E: WatchMessage,
{
    // Placed here: on its way to the actor's node (if connected) before this
    // returns, so the actor's end right after is heard, with its reason.
    let monitor = remote.monitor();
    let actor = remote.id();
    let watcher_gone = watcher.get_cell();
    let task = tokio::spawn(async move {
        tokio::select! {
            event = monitor => {
                // The watcher may have stopped meanwhile; then nobody is left to tell.
                let _ = watcher.cast(to_msg(E::from_watch(actor, event)));
            }
            _ = watcher_gone.wait(None) => {}
        }
    });
    Watch { task: task.abort_handle() }
}
