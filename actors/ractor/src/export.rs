//! Exporting a local ractor actor: its `ActorRef` as a tether mailbox.

use futures::future::BoxFuture;
use ractor::{ActorRef, MessagingErr};
use tether::{Mailbox, NameTaken, Node, RemoteMessage, RemoteRef};

/// A local ractor actor seen by the node as a mailbox.
struct ActorMailbox<M>(ActorRef<M>);

impl<M: ractor::Message + RemoteMessage> Mailbox<M> for ActorMailbox<M> {
    fn deliver(&self, msg: M) -> Result<(), M> {
        match self.0.cast(msg) {
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

    fn stopped(&self) -> BoxFuture<'static, ()> {
        let cell = self.0.get_cell();
        // ractor's stop notification (a `Notify` fired once the status
        // becomes `Stopped`, with a permit kept for late waiters): no polling.
        Box::pin(async move {
            let _ = cell.wait(None).await;
        })
    }
}

/// Makes a local ractor actor reachable from peers of `node`, under `name`
/// if one is given (peers find named actors with [`lookup`](crate::lookup)).
///
/// Messages from peers are handed to the actor with `cast`, in the order each
/// sender sent them. When the actor stops, the export and its name are
/// removed and monitors of the returned ref report
/// [`WatchEvent::Stopped`](tether::WatchEvent::Stopped).
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
