//! Why a remote `send` failed.

use std::time::Duration;

use actix::MailboxError;
use tether::RemoteError;

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

/// For code written against actix's `Result<_, MailboxError>`: a timeout
/// stays a timeout, everything else reads as `Closed`.
impl From<RemoteMailboxError> for MailboxError {
    fn from(e: RemoteMailboxError) -> Self {
        match e {
            RemoteMailboxError::Timeout(_) => MailboxError::Timeout,
            _ => MailboxError::Closed,
        }
    }
}
