//! Cluster events delivered to a local actix actor.

use actix::prelude::*;
use tether::cluster::{Cluster, ClusterEvent, EventsError};

/// Sent to an actor subscribed with [`subscribe`]: the next cluster event,
/// or [`EventsError::Lagged`] if the actor fell so far behind that some were
/// dropped for it (then [`Cluster::members`] tells the state now).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterUpdate(pub Result<ClusterEvent, EventsError>);

impl Message for ClusterUpdate {
    type Result = ();
}

/// Delivers `cluster`'s events to `subscriber`, starting with a
/// [`ClusterEvent::NodeUp`] for each member up now, in order, until the
/// subscriber stops or the node leaves the cluster.
///
/// Each event waits for room in the subscriber's mailbox (`send`, not
/// `do_send`), so none is dropped on the way; an actor that stays more than
/// [`ClusterConfig::event_buffer`](tether::cluster::ClusterConfig::event_buffer)
/// events behind is told how many it missed. Call within a running actix
/// system (an actor's `started` is a good place); abort the returned
/// handle to unsubscribe.
pub fn subscribe(cluster: &Cluster, subscriber: impl Into<Recipient<ClusterUpdate>>) -> tokio::task::JoinHandle<()> {
    let subscriber = subscriber.into();
    let mut events = cluster.subscribe();
    actix::spawn(async move {
        loop {
            let next = events.recv().await;
            if next == Err(EventsError::Closed) {
                return;
            }
            if subscriber.send(ClusterUpdate(next)).await.is_err() {
                // The subscriber stopped.
                return;
            }
        }
    })
}
