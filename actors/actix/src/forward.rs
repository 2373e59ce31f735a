//! A local actix actor standing in for a remote one, so that a
//! [`RemoteAddr`] can become an actix `Recipient`.

use actix::dev::{MessageResponse, OneshotSender};
use actix::{Actor, Context, Handler, Message, Recipient};
use tether::RemoteMessage;

use crate::RemoteAddr;

/// Forwards every message to `to`.
pub(crate) struct Forward<M: Message> {
    to: RemoteAddr<M>,
}

impl<M> Forward<M>
where
    M: Message + RemoteMessage,
    M::Result: RemoteMessage,
{
    pub(crate) fn start_for(to: RemoteAddr<M>) -> Recipient<M> {
        Forward { to }.start().recipient()
    }
}

impl<M> Actor for Forward<M>
where
    M: Message + RemoteMessage,
    M::Result: RemoteMessage,
{
    type Context = Context<Self>;
}

impl<M> Handler<M> for Forward<M>
where
    M: Message + RemoteMessage,
    M::Result: RemoteMessage,
{
    type Result = Forwarded<M>;

    fn handle(&mut self, msg: M, _: &mut Context<Self>) -> Forwarded<M> {
        Forwarded { to: self.to.clone(), msg }
    }
}

/// A message on its way on: sent with a result if the local sender waits
/// for one, else without.
pub(crate) struct Forwarded<M: Message> {
    to: RemoteAddr<M>,
    msg: M,
}

impl<M> MessageResponse<Forward<M>, M> for Forwarded<M>
where
    M: Message + RemoteMessage,
    M::Result: RemoteMessage,
{
    fn handle(self, _: &mut Context<Forward<M>>, tx: Option<OneshotSender<M::Result>>) {
        let Forwarded { to, msg } = self;
        let Some(tx) = tx else {
            // `do_send` / `try_send` on the recipient: nobody waits.
            return to.do_send(msg);
        };
        // Queued now, in the order the forwarder handles messages.
        let result = to.send(msg);
        actix::spawn(async move {
            match result.await {
                Ok(r) => {
                    let _ = tx.send(r);
                }
                // Dropping `tx` is how actix says the recipient is closed:
                // its only word for a failure. One that is not a closed
                // mailbox is logged as what it is.
                Err(e) if actix::MailboxError::try_from(e.clone()).is_ok() => {
                    tracing::debug!(error = %e, "forwarded send failed")
                }
                Err(e) => tracing::warn!(error = %e, "forwarded send failed; the recipient's caller sees Closed"),
            }
        });
    }
}
