//! Cluster events delivered to a local ractor actor.

use ractor::ActorRef;
use tether::cluster::{Cluster, ClusterEvent, EventsError};

/// Delivers `cluster`'s events to `subscriber` as messages of its own type,
/// built by `to_msg`, starting with a [`ClusterEvent::NodeUp`] for each
/// member up now, in order, until the subscriber stops or the node leaves
/// the cluster:
///
/// ```
/// # use ractor::ActorRef;
/// use tether::cluster::{Cluster, ClusterEvent, EventsError};
///
/// enum Supervisor {
///     Members(Result<ClusterEvent, EventsError>),
///     // ..
/// }
///
/// // In the actor's `pre_start`, or wherever a tokio runtime runs:
/// fn follow(cluster: &Cluster, myself: ActorRef<Supervisor>) {
///     tether_ractor::subscribe(cluster, myself, Supervisor::Members);
/// }
/// ```
///
/// ractor's mailboxes are unbounded, so events are handed over as they come
/// and none is missed unless this task itself is starved for more than
/// [`ClusterConfig::event_buffer`](tether::cluster::ClusterConfig::event_buffer)
/// events; then the subscriber gets [`EventsError::Lagged`] with how many.
/// Abort the returned handle to unsubscribe.
pub fn subscribe<W>(
    cluster: &Cluster,
    subscriber: ActorRef<W>,
    to_msg: impl Fn(Result<ClusterEvent, EventsError>) -> W + Send + 'static,
) -> tokio::task::JoinHandle<()>
where
    W: ractor::Message,
{
    let mut events = cluster.subscribe();
    let gone = subscriber.get_cell();
    tokio::spawn(async move {
        loop {
            let next = tokio::select! {
                next = events.recv() => next,
                _ = gone.wait(None) => return,
            };
            if next == Err(EventsError::Closed) || subscriber.cast(to_msg(next)).is_err() {
                return;
            }
        }
    })
}
