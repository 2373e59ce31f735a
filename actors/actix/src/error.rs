//! Why a remote `send` failed.

use std::time::Duration;

use actix::prelude::SendError;
use actix::MailboxError;
use tether::{RemoteError, TellError};

/// Why [`RemoteAddr::send`](crate::RemoteAddr::send) got no result: actix's
/// [`MailboxError`] widened by what a network adds.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RemoteMailboxError {
    /// The actor stopped before it answered (actix's
    /// [`MailboxError::Closed`]).
    #[error("the actor stopped before answering")]
    Closed,
    /// No answer within the timeout. The request is cancelled: if it has
    /// not reached the actor's handler yet, it never will.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The actor's node cannot be reached (lost, restarted, no route, or the
    /// local node is gone).
    #[error("actor unreachable: {0}")]
    Unreachable(RemoteError),
    /// The message or its result could not be encoded or decoded, or is
    /// larger than the connection allows.
    #[error("message not carried: {0}")]
    Message(String),
    /// This node already waits on `limit` requests to the actor's node
    /// (`tether::Config::max_pending_asks`); this one was not sent.
    #[error("too many requests pending on the actor's node (limit {limit})")]
    TooManyPending {
        /// The limit.
        limit: u32,
    },
}

impl RemoteMailboxError {
    /// Whether the actor is known to be gone for good (stopped, or its node
    /// restarted); retrying cannot help.
    pub fn is_final(&self) -> bool {
        matches!(self, RemoteMailboxError::Closed | RemoteMailboxError::Unreachable(RemoteError::NodeRestarted(_)))
    }

    pub(crate) fn from_remote(e: RemoteError) -> Self {
        match e {
            RemoteError::Stopped => RemoteMailboxError::Closed,
            other => RemoteMailboxError::Unreachable(other),
        }
    }
}

/// actix's [`MailboxError`] where the meaning is the same: the actor
/// stopped or cannot be reached is [`MailboxError::Closed`], a timeout is
/// [`MailboxError::Timeout`]. A message or result that could not be
/// carried, a request refused for too many pending, a type the actor does
/// not take and a forged ref mean neither, and come back as they are: an
/// encoding failure never reads as a closed mailbox.
impl TryFrom<RemoteMailboxError> for MailboxError {
    type Error = RemoteMailboxError;

    fn try_from(e: RemoteMailboxError) -> Result<Self, RemoteMailboxError> {
        match e {
            RemoteMailboxError::Timeout(_) => Ok(MailboxError::Timeout),
            // A type mismatch or a forged ref is no closed mailbox.
            RemoteMailboxError::Unreachable(RemoteError::TypeMismatch { .. } | RemoteError::Forbidden) => Err(e),
            RemoteMailboxError::Closed | RemoteMailboxError::Unreachable(_) => Ok(MailboxError::Closed),
            other => Err(other),
        }
    }
}

/// [`TellError`] in actix's terms, for code written against actix's
/// `Result<(), SendError<M>>` (`try_send`).
pub trait TellErrorExt<M> {
    /// actix's [`SendError`] where the meaning is the same: a full window
    /// is [`SendError::Full`], an actor that stopped or cannot be reached
    /// [`SendError::Closed`], each with the message. A message that cannot
    /// be carried (it does not encode, or is too large) means neither, and
    /// comes back as it is.
    fn into_send_error(self) -> Result<SendError<M>, TellError<M>>;
}

impl<M> TellErrorExt<M> for TellError<M> {
    fn into_send_error(self) -> Result<SendError<M>, TellError<M>> {
        match self {
            TellError::Full(msg) => Ok(SendError::Full(msg)),
            TellError::Unreachable { msg, .. } => Ok(SendError::Closed(msg)),
            other => Err(other),
        }
    }
}

/// Why the actor cannot be reached: `Closed` if it stopped, else
/// `Unreachable`.
impl From<RemoteError> for RemoteMailboxError {
    fn from(e: RemoteError) -> Self {
        RemoteMailboxError::from_remote(e)
    }
}
