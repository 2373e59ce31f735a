//! Why a remote call failed.

use std::time::Duration;

use ractor::MessagingErr;
use tether::{ActorId, AskError, NodeId, RemoteError, TellError};

/// Why [`RemoteActorRef::call`](crate::RemoteActorRef::call) failed.
///
/// Failures to send the request (the actor's node unreachable, the actor
/// stopped) and failures while waiting for the reply are told apart, as
/// ractor's `CallResult` tells `Timeout` from `SenderError`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// No reply within the timeout. The request may still be handled.
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    /// The handler dropped the reply port without answering (ractor's
    /// `CallResult::SenderError`). Reported as soon as the port is dropped.
    #[error("the actor dropped the reply port without answering")]
    NoReply,
    /// The request could not reach the actor, or the actor's node was lost
    /// while the reply was awaited.
    #[error("actor unreachable: {0}")]
    Unreachable(RemoteError),
    /// The request could not be sent (too large, does not encode) or the
    /// reply does not decode.
    #[error("call failed: {0}")]
    Failed(#[source] AskError),
}

impl CallError {
    /// Whether the call gave up waiting; the actor may still handle it.
    pub fn is_timeout(&self) -> bool {
        matches!(self, CallError::Timeout(_))
    }

    /// An ask's failure as a call's; `node` is the actor's, if known, to
    /// name when a reply was lost with its connection.
    pub(crate) fn from_ask(e: AskError, node: Option<NodeId>) -> CallError {
        match (e, node) {
            (AskError::Timeout(t), _) => CallError::Timeout(t),
            (AskError::NoReply, _) => CallError::NoReply,
            (AskError::Unreachable(e), _) => CallError::Unreachable(e),
            (AskError::Reply(tether::oneshot::RecvError::Connection(_)), Some(node)) => {
                CallError::Unreachable(RemoteError::NodeLost(node))
            }
            (other, _) => CallError::Failed(other),
        }
    }
}

/// A fire-and-forget send's failure in ractor's terms (the table in the
/// [crate docs](crate#errors)):
///
/// - the actor stopped or its node cannot be reached: `SendErr(msg)`, as
///   ractor reports a send to a dead actor (its docs: "the actor has
///   died"), with the message back;
/// - the node's outbox is full (`Config::max_outbox`; counted and logged by
///   the node): `SendErr(msg)`, as ractor reports a message its mailbox did
///   not admit;
/// - the message does not encode or is too large: `InvalidActorType`, as
///   ractor's own `cluster` feature reports a message it cannot serialize
///   for a remote actor; logged at warn with the codec's error. Never
///   `SendErr` (which would say the actor is gone) nor `ChannelClosed`.
pub(crate) fn messaging_err<M>(actor: ActorId, e: TellError<M>) -> MessagingErr<M> {
    match e {
        TellError::Full(msg) => MessagingErr::SendErr(msg),
        TellError::Unreachable { msg, error } => {
            tracing::debug!(%actor, %error, "message not sent: actor unreachable");
            MessagingErr::SendErr(msg)
        }
        TellError::Send(e) => match e.split() {
            (msg, tether::mpsc::SendError::Closed(()) | tether::mpsc::SendError::Full(())) => {
                MessagingErr::SendErr(msg)
            }
            (_msg, error) => {
                tracing::warn!(%actor, %error, "message not sent (reported to ractor code as InvalidActorType)");
                MessagingErr::InvalidActorType
            }
        },
        // Future kinds: the message back, as for any send that did not go.
        other => MessagingErr::SendErr(other.into_inner()),
    }
}
