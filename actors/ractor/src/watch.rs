//! Death watch delivered to a local ractor actor.

use ractor::ActorRef;
use tether::{RemoteMessage, WatchEvent};

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

/// Tells the local actor `watcher` once, with the message `to_msg` builds,
/// when `remote` can no longer be reached:
///
/// - [`WatchEvent::Stopped`]: the actor stopped (or was not there any more),
/// - [`WatchEvent::NodeLost`]: the connection to its node is gone,
/// - [`WatchEvent::NodeRestarted`]: its node restarted, and the actor with it.
///
/// This is ractor's `monitor` for a remote actor. ractor reports a local
/// child's end as a `SupervisionEvent`; a remote actor cannot be linked,
/// so here the event arrives as an ordinary message of the watcher's own
/// type:
///
/// ```
/// # use ractor::ActorRef;
/// # use tether_ractor::RemoteActorRef;
/// # #[derive(serde::Serialize, serde::Deserialize)]
/// # enum CounterMsg {}
/// enum WatcherMsg {
///     CounterGone(tether::WatchEvent),
///     // ..
/// }
///
/// // In the watcher's handler, or wherever a tokio runtime runs:
/// fn watch_counter(counter: &RemoteActorRef<CounterMsg>, myself: ActorRef<WatcherMsg>) {
///     tether_ractor::watch(counter, myself, WatcherMsg::CounterGone);
/// }
/// ```
///
/// If the watcher stops first, the watch ends quietly. Must be called
/// within a tokio runtime (any ractor handler is).
pub fn watch<M, W>(
    remote: &RemoteActorRef<M>,
    watcher: ActorRef<W>,
    to_msg: impl FnOnce(WatchEvent) -> W + Send + 'static,
) -> Watch
where
    M: RemoteMessage,
    W: ractor::Message,
{
    let monitor = remote.monitor();
    let watcher_gone = watcher.get_cell();
    let task = tokio::spawn(async move {
        tokio::select! {
            event = monitor => {
                // The watcher may have stopped meanwhile; then nobody is left to tell.
                let _ = watcher.cast(to_msg(event));
            }
            _ = watcher_gone.wait(None) => {}
        }
    });
    Watch { task: task.abort_handle() }
}
