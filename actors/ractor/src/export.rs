//! Exporting a local ractor actor: its `ActorRef` as a tether mailbox.

use std::sync::Arc;

use futures::future::BoxFuture;
use ractor::{ActorRef, MessagingErr};
use tether::{Mailbox, NameTaken, Node, RemoteMessage, RemoteRef};

use crate::pace::Pace;
use crate::Paced;

/// Hands `msg` to the actor's mailbox; gives it back if the actor is gone.
fn cast<M: ractor::Message>(actor: &ActorRef<M>, msg: M) -> Result<(), M> {
    match actor.cast(msg) {
        Ok(()) => Ok(()),
        // The actor is draining, stopping or stopped.
        Err(MessagingErr::SendErr(msg)) => Err(msg),
        // A typed local `ActorRef` never reports these without the
        // `cluster` feature (`InvalidActorType` needs a mistyped cell,
        // `ChannelClosed` is a receive-side error), and neither carries
        // the message, so there is nothing to hand back. The actor's
        // stop notification still fires and unregisters the export.
        Err(MessagingErr::ChannelClosed | MessagingErr::InvalidActorType) => Ok(()),
    }
}

/// Resolves once the actor has stopped: ractor's stop notification (a
/// `Notify` fired once the status becomes `Stopped`, with a permit kept for
/// late waiters), so no polling.
fn stopped<M>(actor: &ActorRef<M>) -> BoxFuture<'static, ()> {
    let cell = actor.get_cell();
    Box::pin(async move {
        let _ = cell.wait(None).await;
    })
}

/// A local ractor actor seen by the node as a mailbox it cannot pace.
struct ActorMailbox<M>(ActorRef<M>);

impl<M: ractor::Message + RemoteMessage> Mailbox<M> for ActorMailbox<M> {
    fn deliver(&self, msg: M) -> Result<(), M> {
        cast(&self.0, msg)
    }

    fn stopped(&self) -> BoxFuture<'static, ()> {
        stopped(&self.0)
    }
}

/// A [`Paced`] actor seen by the node: it can tell when a message was
/// handled, so the node paces deliveries to it.
struct PacedMailbox<M> {
    actor: ActorRef<M>,
    pace: Arc<Pace>,
}

impl<M: ractor::Message + RemoteMessage> Mailbox<M> for PacedMailbox<M> {
    fn deliver(&self, msg: M) -> Result<(), M> {
        self.pace.deliver(msg, |msg| cast(&self.actor, msg))
    }

    // The wait needs no polling to progress: the actor's count wakes it,
    // and the end of the actor's task ends it (the sender is dropped).
    fn deliver_tracked(&self, msg: M) -> Result<Option<BoxFuture<'static, ()>>, M> {
        let handled = self.pace.deliver_tracked(msg, |msg| cast(&self.actor, msg))?;
        Ok(Some(Box::pin(async move {
            let _ = handled.await;
        })))
    }

    fn stopped(&self) -> BoxFuture<'static, ()> {
        stopped(&self.actor)
    }
}

/// Makes a local ractor actor reachable from peers of `node`, under `name`
/// if one is given (peers find named actors with [`lookup`](crate::lookup)),
/// **without pacing**: use [`export_paced`] for an actor that may fall
/// behind its senders.
///
/// Messages from peers are handed to the actor with `cast`, in the order each
/// sender sent them, as fast as they arrive: ractor cannot tell when a plain
/// actor handled a message, so its mailbox, which ractor does not bound,
/// takes whatever its senders send, and they never wait for it. When the
/// actor stops, the export and its name are removed and monitors of the
/// returned ref report [`WatchEvent::Stopped`](tether::WatchEvent::Stopped).
///
/// The returned [`RemoteRef`] addresses the actor from anywhere; wrap it with
/// [`RemoteActorRef::from`](crate::RemoteActorRef) to send it inside
/// messages in ractor's idiom. Must be called within a tokio runtime.
///
/// # Errors
///
/// [`NameTaken`] if another actor is already exported under `name` on this
/// node.
pub fn export<M>(node: &Node, name: Option<&str>, actor: ActorRef<M>) -> Result<RemoteRef<M>, NameTaken>
where
    M: ractor::Message + RemoteMessage,
{
    node.export(name, ActorMailbox(actor))
}

/// Makes an actor spawned with [`Paced::spawn`] reachable from peers of
/// `node`, like [`export`], and has it push back on its senders.
///
/// Messages are handed to the actor with `cast`, in the order each sender
/// sent them, but no faster than the actor handles them: fewer than 512 of
/// one route's messages (those sent through one node's handles to the
/// actor) are in its mailbox at once, and about 512 KiB of their encodings
/// at most, plus one message. While the actor is that far behind, the node
/// reads no more from the route, its window fills, and the senders wait:
/// [`send`](crate::RemoteActorRef::send) waits and
/// [`cast`](crate::RemoteActorRef::cast) fails with
/// [`TellError::Full`](tether::TellError::Full). Sends from `node` itself
/// (through the returned ref) are paced the same way. Nothing is dropped:
/// once the actor catches up, every message arrives, once, in order.
///
/// The bound counts messages, and ractor does not say which message a
/// handler got: the actor counts every one it handles. A message that
/// reaches it around tether (a `cast` on its `ActorRef`, a ractor timer, an
/// [`export`] of the same `ActorRef`) is not paced, and each one the actor
/// handles while tether's messages wait lets one more of theirs in.
///
/// Two consequences of pacing, as for every tether adapter (see
/// [`tether::Mailbox::deliver_tracked`]): a handler that waits for a message
/// sent more than 255 messages after its own on the same route waits
/// forever; and a route held up here holds up to `Config::port_window` of
/// its connection's window, so once `conn_window / port_window` routes (8 by
/// default) of one connection wait at once, its other ports stall too.
///
/// When the actor stops, every wait ends, the export and its name are
/// removed and monitors of the returned ref report
/// [`WatchEvent::Stopped`](tether::WatchEvent::Stopped). Must be called
/// within a tokio runtime.
///
/// # Errors
///
/// [`NameTaken`] if another actor is already exported under `name` on this
/// node.
pub fn export_paced<M>(node: &Node, name: Option<&str>, actor: Paced<M>) -> Result<RemoteRef<M>, NameTaken>
where
    M: ractor::Message + RemoteMessage,
{
    let (actor, pace) = actor.into_parts();
    node.export(name, PacedMailbox { actor, pace })
}
