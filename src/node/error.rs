//! Why an operation on a remote actor failed.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::NodeId;

/// Why a remote operation could not reach its actor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum RemoteError {
    /// No actor is exported under this name.
    #[error("no actor named {0:?}")]
    NotFound(String),
    /// The actor takes another message type than the one asked for: their
    /// [tags](crate::message_tag) differ. (A ref that comes back to its own
    /// node typed as another Rust type with the same tag names the Rust
    /// types: within a process messages are not encoded, so the Rust types
    /// must be the same.)
    #[error("type mismatch: asked for {expected}, the actor takes {found}")]
    TypeMismatch {
        /// The tag of the type this side asked for.
        expected: String,
        /// The tag of the type the actor takes.
        found: String,
    },
    /// The actor has stopped (or never existed under that id).
    #[error("actor stopped")]
    Stopped,
    /// The ref is not a capability for the actor: its token was not minted
    /// by the owner (a guessed or altered id). The actor received nothing.
    #[error("forbidden: the ref was not issued by the actor's node")]
    Forbidden,
    /// There is no connection to the node, nor to a node that could forward.
    #[error("no route to node {0}")]
    NoRoute(NodeId),
    /// The node's connection was lost.
    #[error("node {0} lost")]
    NodeLost(NodeId),
    /// The node shut down and said goodbye.
    #[error("node {0} left")]
    NodeLeft(NodeId),
    /// The node restarted with a new identity; its old actors are gone.
    #[error("node {0} restarted")]
    NodeRestarted(NodeId),
    /// The node is a cluster member, but connecting to it failed (refused,
    /// timed out, wrong cookie, TLS): why, as the connection reported it.
    #[error("connecting to member {node} failed: {why}")]
    ConnectFailed {
        /// The member.
        node: NodeId,
        /// The connection error's text.
        why: String,
    },
    /// The peer did not answer in time.
    #[error("peer did not answer within {0:?}")]
    Timeout(Duration),
    /// This side's node was shut down or dropped.
    #[error("local node is gone")]
    NodeGone,
}

impl RemoteError {
    /// Whether the actor's node is gone (lost, left or restarted), so no
    /// later attempt through this ref can succeed on its own.
    pub fn is_node_gone(&self) -> bool {
        matches!(self, RemoteError::NodeLost(_) | RemoteError::NodeLeft(_) | RemoteError::NodeRestarted(_))
    }
}

/// Why `lookup` failed. Lookups report type mismatches at once, never as a
/// garbled decode later.
pub type LookupError = RemoteError;

/// A name already used by another export.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("an actor is already exported as {0:?}")]
pub struct NameTaken(pub String);
