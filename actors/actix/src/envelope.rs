//! The wire form of a message to an actix actor.

use std::fmt;

use serde::{Deserialize, Serialize};
use tether::{oneshot, RemoteMessage};

/// What travels to an exported actix actor: the message, and for `send`
/// the port its [`actix::Message::Result`] goes back on.
///
/// Users never build one; [`RemoteAddr`](crate::RemoteAddr) does. It is
/// public only because it names the message type of the underlying
/// [`tether::RemoteRef`], so the tag checked at lookup
/// ([`tether::message_tag`]) is `Envelope<YourMessage>`: your message
/// type's name without its module path. Its serde rename and field or
/// variant names are not part of it (a tag covers only the top level, here
/// `Envelope`).
#[derive(Serialize, Deserialize)]
#[serde(bound = "M: RemoteMessage, M::Result: RemoteMessage")]
pub struct Envelope<M: actix::Message>(pub(crate) Kind<M>);

#[derive(Serialize, Deserialize)]
#[serde(bound = "M: RemoteMessage, M::Result: RemoteMessage")]
pub(crate) enum Kind<M: actix::Message> {
    /// Fire and forget.
    Tell { msg: M },
    /// A request; the handler's result is sent on `reply`. A closed `reply`
    /// means the asker gave up, so the work is skipped.
    Send { msg: M, reply: oneshot::Sender<Reply<M::Result>> },
}

/// What a request's reply port carries: the handler's result, or why it
/// could not be sent back (it does not encode, or is larger than the
/// asker's connection takes), so that the asker is not told the actor
/// stopped.
pub(crate) type Reply<R> = Result<R, String>;

impl<M> Envelope<M>
where
    M: actix::Message + RemoteMessage,
    M::Result: RemoteMessage,
{
    /// The message inside, and apart whatever else travelled with it.
    pub(crate) fn split_msg(self) -> (M, Box<dyn std::any::Any + Send>) {
        match self.0 {
            Kind::Tell { msg } => (msg, Box::new(())),
            Kind::Send { msg, reply } => (msg, Box::new(reply)),
        }
    }
}

impl<M: actix::Message> fmt::Debug for Envelope<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Kind::Tell { .. } => f.write_str("Envelope::Tell"),
            Kind::Send { .. } => f.write_str("Envelope::Send"),
        }
    }
}
