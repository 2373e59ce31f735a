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
///
/// The subscription holds the subscriber weakly: it does not keep the actor
/// alive, and ends with it.
pub fn subscribe(cluster: &Cluster, subscriber: impl Into<Recipient<ClusterUpdate>>) -> tokio::task::JoinHandle<()> {
    let subscriber = subscriber.into().downgrade();
    let mut events = cluster.subscribe();
    actix::spawn(async move {
        loop {
            let next = events.recv().await;
            if next == Err(EventsError::Closed) {
                return;
            }
            let Some(to) = subscriber.upgrade() else { return };
            if to.send(ClusterUpdate(next)).await.is_err() {
                // The subscriber stopped.
                return;
            }
        }
    })
}
