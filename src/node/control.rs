//! The control vocabulary: what nodes say to each other on the root
//! channel of their connection, all of it in this one enum. The byte layout
//! is in `docs/PROTOCOL.md` ("Node control messages").
//!
//! The root channel carries `Control` values encoded with the connection's
//! codec, like any channel; reply ports inside them are channel ends.
//! `Hello` comes first, from both sides. Of two nodes, the one with the
//! smaller [`NodeId`] (the decider) decides whether a connection between
//! them is kept, and says so in its `Hello`, which it sends at once. The
//! other side waits for it: if the connection is kept, it takes it in and
//! answers with its own `Hello`; if not, it closes it without a word. So
//! two nodes that dial each other at the same moment keep exactly one
//! connection, the same on both sides, nothing is sent on the other, and
//! when the decider hears the other's `Hello` both list each other.

use serde::{Deserialize, Serialize};

use super::error::RemoteError;
use super::mailbox::ActorExit;
use super::route::Hops;
use crate::auth::Token;
use crate::chan::{oneshot, RawSender};
use crate::NodeId;

/// The close code of a connection whose node shut down (`Node::shutdown`,
/// or its last handle dropped): peers report the node as left, not lost.
pub(crate) const CLOSE_NODE_LEFT: u32 = 2;
/// The close code of a connection that lost the tie-break to another one
/// between the same two nodes.
pub(crate) const CLOSE_DUPLICATE: u32 = 3;

/// What nodes say to each other.
#[derive(Serialize, Deserialize)]
pub(crate) enum Control {
    /// The first message on every connection, from both sides.
    Hello {
        /// The sender's human-readable name, if it has one.
        name: Option<String>,
        /// From the node with the smaller id: whether this connection is the
        /// one kept between the two nodes. The other node's value is
        /// ignored.
        keep: bool,
    },
    /// Which actor is exported as `name`?
    Lookup { name: String, reply: oneshot::Sender<Result<Exported, RemoteError>> },
    /// Open a mailbox route to `target` for messages whose tag (see
    /// `tag.rs`) is `tag`; `reply` is a
    /// `oneshot::Sender<Result<mpsc::Sender<M>, RemoteError>>` whose `M` only
    /// the owner's registry knows. Forwarded hop by hop to the owner.
    /// `hops`: where to forward next if the receiver has no connection to
    /// the owner (see `route::Hops`).
    Open { target: crate::ActorId, token: Token, tag: String, reply: RawSender, hops: Hops },
    /// Tell `stopped` how `target` ended once it stops (or at once why it
    /// cannot be watched). Forwarded like `Open`.
    Watch { target: crate::ActorId, token: Token, stopped: Watcher, hops: Hops },
}

/// The answer to a `Lookup`.
#[derive(Serialize, Deserialize)]
pub(crate) struct Exported {
    pub(crate) actor: u64,
    pub(crate) token: Token,
    /// The tags of the message types the actor takes (at least one).
    pub(crate) tags: Vec<String>,
}

/// Told how the watched actor ended once it has stopped, or an error at
/// once.
pub(crate) type Watcher = oneshot::Sender<Result<ActorExit, RemoteError>>;

/// Whether the node `me` decides about connections with `peer`.
pub(crate) fn decides(me: NodeId, peer: NodeId) -> bool {
    me < peer
}
