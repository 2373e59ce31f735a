//! `RemoteActorRef<M>`: a remote actor in ractor's idiom.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tether::{ActorId, Monitor, Node, NodeId, RemoteError, RemoteMessage, RemoteRef, ReplyPort, TellError};

use crate::CallError;

/// A handle to a ractor actor on any node, used like ractor's `ActorRef`.
///
/// It serializes as the actor's identity, so it can sit inside a message
/// and is live on the node that receives it (a third node reaches the actor
/// through the node it got the handle from). Two handles to the same actor
/// compare equal and hash alike wherever they came from. Cloning is cheap.
///
/// | ractor `ActorRef` | `RemoteActorRef` | waits? |
/// |---|---|---|
/// | `cast(msg)` | [`cast(msg)`](Self::cast) | never: queues when the window is full |
/// | — | [`try_cast(msg)`](Self::try_cast) | never: fails with `Full` when the window is full |
/// | — | [`send(msg).await`](Self::send) | while the window is full |
/// | `call(\|p\| M::X(.., p), Some(t))` | [`call(\|p\| M::X(.., p), t).await`](Self::call) | for the reply, at most `t` |
///
/// Where a local message enum holds an `RpcReplyPort<R>`, a remote one holds
/// a serializable [`ReplyPort<R>`]; the handler answers with
/// [`ReplyPort::send`].
pub struct RemoteActorRef<M> {
    inner: RemoteRef<M>,
}

impl<M: RemoteMessage> RemoteActorRef<M> {
    /// Sends a message without waiting, like ractor's `cast`: a message
    /// that finds the actor's window full, or the route to a handle just
    /// received still opening, waits in the node's outbox and is delivered
    /// in order.
    ///
    /// # Errors
    ///
    /// The message comes back inside the error: [`TellError::Full`] only
    /// when the node's outbox already holds
    /// [`Config::max_outbox`](tether::Config::max_outbox) messages (a
    /// million by default; counted in the node's stats and logged), and
    /// [`TellError::Unreachable`] when the actor stopped or its node cannot
    /// be reached.
    pub fn cast(&self, msg: M) -> Result<(), TellError<M>> {
        self.inner.post(msg)
    }

    /// Sends a message if the actor's window has room now; never queues
    /// behind a full window.
    ///
    /// # Errors
    ///
    /// [`TellError::Full`] when the window is full (or messages cast
    /// earlier still wait for room), [`TellError::Unreachable`] when the
    /// actor stopped or its node cannot be reached.
    pub fn try_cast(&self, msg: M) -> Result<(), TellError<M>> {
        self.inner.try_tell(msg)
    }

    /// Sends a message, waiting while the actor's window is full. Messages
    /// from one sender arrive in the order sent.
    ///
    /// # Errors
    ///
    /// [`TellError::Unreachable`] when the actor stopped or its node cannot
    /// be reached, [`TellError::Send`] when the message is too large or does
    /// not encode; the message comes back inside the error.
    pub async fn send(&self, msg: M) -> Result<(), TellError<M>> {
        self.inner.tell(msg).await
    }

    /// Sends the request `make` builds around a fresh reply port and waits
    /// at most `timeout` for the answer, like ractor's `call`.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use tether::ReplyPort;
    /// # use tether_ractor::{CallError, RemoteActorRef};
    /// #[derive(serde::Serialize, serde::Deserialize)]
    /// enum Counter {
    ///     Get(ReplyPort<u64>),
    ///     Echo(String, ReplyPort<String>),
    /// }
    ///
    /// async fn use_it(counter: &RemoteActorRef<Counter>) -> Result<(), CallError> {
    ///     let total: u64 = counter.call(Counter::Get, Duration::from_secs(1)).await?;
    ///     let echo = counter.call(|reply| Counter::Echo("hi".into(), reply), Duration::from_secs(1)).await?;
    ///     # let _ = (total, echo);
    ///     Ok(())
    /// }
    /// ```
    ///
    /// Dropping the returned future abandons the call: the handler sees
    /// [`ReplyPort::is_closed`].
    ///
    /// # Errors
    ///
    /// See [`CallError`]; a handler that drops the reply port unanswered
    /// fails the call at once with [`CallError::NoReply`].
    pub async fn call<R: RemoteMessage>(
        &self,
        make: impl FnOnce(ReplyPort<R>) -> M,
        timeout: Duration,
    ) -> Result<R, CallError> {
        self.inner.ask(make, timeout).await.map_err(|e| CallError::from_ask(e, Some(self.inner.id().node)))
    }

    /// The actor's identity: its node and its id there.
    pub fn id(&self) -> ActorId {
        self.inner.id()
    }

    /// Resolves once with why the actor can no longer be reached. To have a
    /// local actor told instead, use [`watch`](crate::watch).
    pub fn monitor(&self) -> Monitor {
        self.inner.monitor()
    }

    /// The framework-neutral ref inside.
    pub fn as_remote_ref(&self) -> &RemoteRef<M> {
        &self.inner
    }

    /// Unwraps the framework-neutral ref.
    pub fn into_remote_ref(self) -> RemoteRef<M> {
        self.inner
    }
}

/// Finds the actor exported as `name` on the connected node `peer`,
/// checking that it takes messages of type `M`.
///
/// # Errors
///
/// [`RemoteError::NotFound`] if nothing is exported under `name`,
/// [`RemoteError::TypeMismatch`] if the actor takes another message type,
/// and the connection errors of [`Node::lookup`].
pub async fn lookup<M: RemoteMessage>(node: &Node, peer: NodeId, name: &str) -> Result<RemoteActorRef<M>, RemoteError> {
    node.lookup(peer, name).await.map(RemoteActorRef::from)
}

impl<M> From<RemoteRef<M>> for RemoteActorRef<M> {
    fn from(inner: RemoteRef<M>) -> Self {
        RemoteActorRef { inner }
    }
}

impl<M> From<RemoteActorRef<M>> for RemoteRef<M> {
    fn from(r: RemoteActorRef<M>) -> Self {
        r.inner
    }
}

impl<M> Clone for RemoteActorRef<M> {
    fn clone(&self) -> Self {
        RemoteActorRef { inner: self.inner.clone() }
    }
}

impl<M> PartialEq for RemoteActorRef<M> {
    fn eq(&self, other: &Self) -> bool {
        self.inner == other.inner
    }
}

impl<M> Eq for RemoteActorRef<M> {}

impl<M> std::hash::Hash for RemoteActorRef<M> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.inner.hash(state)
    }
}

impl<M> fmt::Debug for RemoteActorRef<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RemoteActorRef").field(&self.inner).finish()
    }
}

/// Serializes exactly as the [`RemoteRef`] inside.
impl<M: RemoteMessage> Serialize for RemoteActorRef<M> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.inner.serialize(s)
    }
}

impl<'de, M: RemoteMessage> Deserialize<'de> for RemoteActorRef<M> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        RemoteRef::deserialize(d).map(RemoteActorRef::from)
    }
}
