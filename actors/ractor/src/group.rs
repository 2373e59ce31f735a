//! `RemoteGroup<M>`: sending to a process group's members in ractor's
//! idiom.

use std::fmt;
use std::hash::Hash;
use std::time::Duration;

use tether::cluster::{Broadcast, Group, GroupKey, Strategy};
use tether::{ActorId, RemoteMessage, ReplyPort, TellError};

use crate::{CallError, RemoteActorRef};

/// A handle for sending to the members of a process group, on any node:
/// [`RemoteActorRef`]'s `try_cast`, `send` and `ask` (here `cast`, `send` and
/// `ask`), to one member picked by
/// a [`Strategy`] (round robin unless [`with_strategy`](Self::with_strategy)
/// says otherwise) or by a key, and [`broadcast`](Self::broadcast) to all.
///
/// Get one with [`pg::group`](crate::pg::group). It follows the group's
/// membership as the cluster's registry does. A message goes to one member
/// at most: a member that cannot take it at once (stopped, its node gone)
/// is skipped for the next, but a message handed over is never sent again
/// (see [`tether::cluster::Group`], which this wraps).
pub struct RemoteGroup<M> {
    inner: Group<M>,
}

impl<M: RemoteMessage> RemoteGroup<M> {
    pub(crate) fn new(inner: Group<M>) -> RemoteGroup<M> {
        RemoteGroup { inner }
    }

    /// The group's key.
    pub fn key(&self) -> &GroupKey {
        self.inner.key()
    }

    /// The same group, picking members by `strategy`.
    pub fn with_strategy(self, strategy: Strategy) -> RemoteGroup<M> {
        RemoteGroup { inner: self.inner.with_strategy(strategy) }
    }

    /// The members now that take messages of type `M`, by node.
    pub fn members(&self) -> Vec<RemoteActorRef<M>> {
        self.inner.members().iter().cloned().map(RemoteActorRef::from).collect()
    }

    /// Sends a message to one member without waiting, like ractor's
    /// `cast`: a member with room now, else queued for the first reachable
    /// member in the strategy's order (see
    /// [`RemoteActorRef::cast`](crate::RemoteActorRef::cast)). Returns the
    /// member it went to.
    ///
    /// # Errors
    ///
    /// The message comes back: [`TellError::Unreachable`] if no member can
    /// be reached (with
    /// [`RemoteError::NotFound`](tether::RemoteError::NotFound) if the group
    /// has no member), [`TellError::Full`] only past the node's
    /// [`Config::max_outbox`](tether::Config::max_outbox).
    pub fn cast(&self, msg: M) -> Result<ActorId, TellError<M>> {
        self.inner.post(msg)
    }

    /// Sends a message to one member that has room now; never waits or
    /// queues. Returns the member it went to.
    ///
    /// # Errors
    ///
    /// As [`cast`](Self::cast), and [`TellError::Full`] if no member has
    /// room.
    pub fn try_cast(&self, msg: M) -> Result<ActorId, TellError<M>> {
        self.inner.try_tell(msg)
    }

    /// Sends a message to one member, waiting while its window is full.
    /// Returns the member it went to.
    ///
    /// # Errors
    ///
    /// As [`cast`](Self::cast), `Full` aside, and [`TellError::Send`] if the
    /// message cannot be carried.
    pub async fn send(&self, msg: M) -> Result<ActorId, TellError<M>> {
        self.inner.tell(msg).await
    }

    /// [`send`](Self::send) to the member `key` hashes to: the same member
    /// for the same key while the group is unchanged, on every node.
    pub async fn send_keyed(&self, key: &impl Hash, msg: M) -> Result<ActorId, TellError<M>> {
        self.inner.tell_keyed(key, msg).await
    }

    /// Sends the request `make` builds around a fresh reply port to one
    /// member and waits at most `timeout` for the answer, like
    /// [`RemoteActorRef::ask`] (a tether [`ReplyPort`]). `make` may be called again for the next
    /// member while the request could not be handed over; once one has it,
    /// it is not sent again.
    ///
    /// # Errors
    ///
    /// See [`CallError`]; [`CallError::Unreachable`] with
    /// [`RemoteError::NotFound`](tether::RemoteError::NotFound) if the group
    /// has no member.
    pub async fn ask<R: RemoteMessage>(
        &self,
        make: impl Fn(ReplyPort<R>) -> M,
        timeout: Duration,
    ) -> Result<R, CallError> {
        self.inner.ask(make, timeout).await.map_err(|e| CallError::from_ask(e, None))
    }

    /// [`ask`](Self::ask) to the member `key` hashes to.
    pub async fn ask_keyed<R: RemoteMessage>(
        &self,
        key: &impl Hash,
        make: impl Fn(ReplyPort<R>) -> M,
        timeout: Duration,
    ) -> Result<R, CallError> {
        self.inner.ask_keyed(key, make, timeout).await.map_err(|e| CallError::from_ask(e, None))
    }

    /// The framework-neutral group handle inside.
    pub fn as_group(&self) -> &Group<M> {
        &self.inner
    }
}

impl<M: RemoteMessage + Clone> RemoteGroup<M> {
    /// Sends a message to every member, all at once, waiting for each
    /// member's window; says to whom it could not be sent.
    pub async fn broadcast(&self, msg: M) -> Broadcast {
        self.inner.broadcast(msg).await
    }
}

impl<M> Clone for RemoteGroup<M> {
    fn clone(&self) -> Self {
        RemoteGroup { inner: self.inner.clone() }
    }
}

impl<M> fmt::Debug for RemoteGroup<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RemoteGroup").field(&self.inner).finish()
    }
}
