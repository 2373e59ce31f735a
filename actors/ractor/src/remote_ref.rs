//! `RemoteActorRef<M>`: a remote actor in ractor's idiom.

use std::fmt;
use std::time::Duration;

use ractor::rpc::CallResult;
use ractor::{ActorCell, ActorRef, MessagingErr, RpcReplyPort, SpawnErr};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tether::{
    ActorId, Monitor, Node, NodeId, OpenRequest, RemoteError, RemoteMessage, RemoteRef, Replies, ReplyPort,
    ReplyStream, RequestPort, TellError,
};

use crate::error::messaging_err;
use crate::{rpc_reply, CallError};

/// A handle to a ractor actor on any node, used like ractor's `ActorRef`.
///
/// It serializes as the actor's identity, so it can sit inside a message
/// and is live on the node that receives it (a third node reaches the actor
/// through the node it got the handle from). Two handles to the same actor
/// compare equal and hash alike wherever they came from. Cloning is cheap.
///
/// It has `ActorRef`'s own methods, so ractor's macros (`cast!`, `call!`,
/// `call_t!`) take it as they take an `ActorRef`; where code needs an
/// `ActorRef<M>` itself, [`to_actor_ref`](Self::to_actor_ref) makes a local
/// proxy actor.
///
/// | ractor `ActorRef` | `RemoteActorRef` | waits? | error |
/// |---|---|---|---|
/// | `cast(msg)`, `send_message(msg)`, `cast!` | [`cast`](Self::cast), [`send_message`](Self::send_message) | never: queues when the window is full | `MessagingErr<M>` |
/// | `call(\|p\| M::X(.., p), t)`, `call!`, `call_t!` | [`call`](Self::call) | for the reply, at most `t` | `MessagingErr<M>`, `CallResult<R>` |
/// | — | [`post`](Self::post) | never: queues when the window is full | [`TellError<M>`] |
/// | — | [`try_cast`](Self::try_cast) | never: fails with `Full` when the window is full | [`TellError<M>`] |
/// | — | [`send(msg).await`](Self::send) | while the window is full | [`TellError<M>`] |
/// | — | [`ask(\|p\| M::X(.., p), t)`](Self::ask) | for the reply, at most `t` | [`CallError`] |
///
/// Use ractor's names to keep ractor code as it is; use tether's where the
/// cause matters (a full outbox, an unreachable node, an encoding error,
/// each with the message back) or where senders should wait for a slow
/// actor ([`send`](Self::send)).
///
/// A request for [`call`](Self::call) holds ractor's `RpcReplyPort<R>`,
/// marked `#[serde(with = "tether_ractor::rpc_reply")]`; one for
/// [`ask`](Self::ask) holds tether's serializable [`ReplyPort<R>`], which
/// travels any way (in a cast, through a proxy, to a third node). Either
/// way the handler answers with the port's `send`.
pub struct RemoteActorRef<M> {
    inner: RemoteRef<M>,
}

impl<M: RemoteMessage> RemoteActorRef<M> {
    /// Sends a message without waiting, like ractor's `ActorRef::cast`
    /// (and `cast!`): a message that finds the actor's window full, or the
    /// route to a handle just received still opening, waits in the node's
    /// outbox and is delivered in order.
    ///
    /// # Errors
    ///
    /// In ractor's terms (the table in the [crate docs](crate#errors)):
    /// [`MessagingErr::SendErr`] with the message when the actor stopped,
    /// its node cannot be reached, or the node's outbox already holds
    /// [`Config::max_outbox`](tether::Config::max_outbox) messages;
    /// [`MessagingErr::InvalidActorType`] when the message does not encode
    /// or is larger than the connection carries (logged at warn with the
    /// codec's error). [`post`](Self::post) says the same in tether's terms.
    pub fn cast(&self, msg: M) -> Result<(), MessagingErr<M>> {
        self.inner.post(msg).map_err(|e| messaging_err(self.id(), e))
    }

    /// The same as [`cast`](Self::cast), under the name of ractor's
    /// `ActorRef::send_message`.
    ///
    /// # Errors
    ///
    /// As [`cast`](Self::cast).
    pub fn send_message(&self, msg: M) -> Result<(), MessagingErr<M>> {
        self.cast(msg)
    }

    /// [`cast`](Self::cast) with tether's error, which tells every case
    /// apart and hands the message back in each.
    ///
    /// # Errors
    ///
    /// The message comes back inside the error: [`TellError::Full`] only
    /// when the node's outbox already holds
    /// [`Config::max_outbox`](tether::Config::max_outbox) messages (a
    /// million by default; counted in the node's stats and logged),
    /// [`TellError::Unreachable`] when the actor stopped or its node cannot
    /// be reached, [`TellError::Send`] when the message is too large or
    /// does not encode.
    pub fn post(&self, msg: M) -> Result<(), TellError<M>> {
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

    /// Sends the request `builder` makes around a ractor `RpcReplyPort` and
    /// waits for the answer, at most `timeout` if one is given: ractor's
    /// `ActorRef::call`, so `call!` and `call_t!` work on a remote actor.
    ///
    /// The request's port field is marked
    /// `#[serde(with = "tether_ractor::rpc_reply")]` (see [`rpc_reply`]);
    /// the handler answers with `RpcReplyPort::send` as it would locally.
    ///
    /// ```
    /// # use ractor::{call, call_t, RactorErr, RpcReplyPort};
    /// # use tether_ractor::RemoteActorRef;
    /// #[derive(serde::Serialize, serde::Deserialize)]
    /// enum Counter {
    ///     Get(#[serde(with = "tether_ractor::rpc_reply")] RpcReplyPort<u64>),
    ///     Echo(String, #[serde(with = "tether_ractor::rpc_reply")] RpcReplyPort<String>),
    /// }
    ///
    /// async fn use_it(counter: &RemoteActorRef<Counter>) -> Result<(), RactorErr<Counter>> {
    ///     let total: u64 = call!(counter, Counter::Get)?;
    ///     let echo = call_t!(counter, Counter::Echo, 1000, "hi".to_string())?;
    ///     # let _ = (total, echo);
    ///     Ok(())
    /// }
    /// ```
    ///
    /// The timeout counts from the start, including a wait for room in the
    /// actor's window. Without one, the call still ends if the actor's node
    /// is lost (`SenderError`). Dropping the returned future abandons the
    /// call: the handler's port reports `is_closed`. Like
    /// [`ask`](Self::ask), a call counts against
    /// [`Config::max_pending_asks`](tether::Config::max_pending_asks).
    ///
    /// # Errors
    ///
    /// `Err` when the request was not sent, as for [`cast`](Self::cast):
    /// `SendErr` with the request (the actor is gone, or too many calls
    /// wait on its node) or `InvalidActorType` (it does not encode; logged).
    /// Otherwise `Ok` with ractor's [`CallResult`]: `Success`, `Timeout`, or
    /// `SenderError` when the handler dropped the port unanswered (told at
    /// once), the actor's node was lost while waiting, or the answer could
    /// not be decoded (logged).
    pub async fn call<R, F>(&self, builder: F, timeout: Option<Duration>) -> Result<CallResult<R>, MessagingErr<M>>
    where
        R: RemoteMessage,
        F: FnOnce(RpcReplyPort<R>) -> M,
    {
        let (tx, local_rx) = ractor::concurrency::oneshot();
        let port = match timeout {
            Some(t) => RpcReplyPort::from((tx, t)),
            None => RpcReplyPort::from(tx),
        };
        let request = builder(port);
        let _permit = match self.inner.ask_permit() {
            Ok(permit) => permit,
            Err(e) => {
                tracing::debug!(actor = %self.id(), error = %e, "call not sent");
                return Err(MessagingErr::SendErr(request));
            }
        };
        let exchange = async {
            // Encoded in this future's own polls (never in the outbox's
            // pump, as `post` or a queued `tell` are), so the scope is seen.
            let scope = rpc_reply::Scope::<R>::new();
            scope.run(self.inner.tell_in_place(request)).await.map_err(|e| messaging_err(self.id(), e))?;
            let answer = match scope.take() {
                Some(pending) => pending.into_receiver().await.map_err(|e| {
                    if !matches!(e, tether::RecvError::Dropped | tether::RecvError::Connection(_)) {
                        tracing::warn!(actor = %self.id(), error = %e, "the answer to a call did not arrive");
                    }
                }),
                // Not encoded: handed to an actor on this node, port and all.
                None => local_rx.await.map_err(drop),
            };
            Ok(match answer {
                Ok(value) => CallResult::Success(value),
                Err(()) => CallResult::SenderError,
            })
        };
        match timeout {
            Some(t) => tokio::time::timeout(t, exchange).await.unwrap_or(Ok(CallResult::Timeout)),
            None => exchange.await,
        }
    }

    /// Sends the request `make` builds around a fresh tether [`ReplyPort`]
    /// and waits at most `timeout` for the answer, with tether's richer
    /// error. The message can travel any way, since a `ReplyPort` is
    /// serializable wherever it is.
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
    ///     let total: u64 = counter.ask(Counter::Get, Duration::from_secs(1)).await?;
    ///     let echo = counter.ask(|reply| Counter::Echo("hi".into(), reply), Duration::from_secs(1)).await?;
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
    pub async fn ask<R: RemoteMessage>(
        &self,
        make: impl FnOnce(ReplyPort<R>) -> M,
        timeout: Duration,
    ) -> Result<R, CallError> {
        self.inner.ask(make, timeout).await.map_err(|e| CallError::from_ask(e, Some(self.inner.id().node)))
    }

    /// Sends the message `make` builds around a [`ReplyStream`] and returns
    /// the stream of replies the handler sends on it (see
    /// [`RemoteRef::ask_stream`](tether::RemoteRef::ask_stream)). ractor has
    /// no streaming reply; this is `call` with a stream where `RpcReplyPort`
    /// takes one answer. The handler keeps the `ReplyStream` (in a task it
    /// spawns, so its actor goes on) and ends it with
    /// [`ReplyStream::end`].
    ///
    /// # Errors
    ///
    /// As [`ask`](Self::ask) fails before an answer: [`CallError::Unreachable`],
    /// or [`CallError::Failed`] (too many pending, or not carried).
    pub async fn ask_stream<R: RemoteMessage>(
        &self,
        make: impl FnOnce(ReplyStream<R>) -> M,
    ) -> Result<Replies<R>, CallError> {
        self.inner.ask_stream(make).await.map_err(|e| CallError::from_ask(e, Some(self.inner.id().node)))
    }

    /// Sends the message `make` builds around a [`RequestPort`] and returns
    /// the asker's end of the request: updates go both ways until the
    /// handler responds (see
    /// [`RemoteRef::open_request`](tether::RemoteRef::open_request)).
    ///
    /// # Errors
    ///
    /// As [`ask_stream`](Self::ask_stream).
    pub async fn open_request<U, D, R>(
        &self,
        make: impl FnOnce(RequestPort<U, D, R>) -> M,
    ) -> Result<OpenRequest<U, D, R>, CallError>
    where
        U: RemoteMessage,
        D: RemoteMessage,
        R: RemoteMessage,
    {
        self.inner.open_request(make).await.map_err(|e| CallError::from_ask(e, Some(self.inner.id().node)))
    }

    /// A local ractor actor that stands for this remote one: code that
    /// takes an `ActorRef<M>` works with it. Must be called within a tokio
    /// runtime.
    ///
    /// ```text
    ///  ActorRef<M> ── cast ──▶ proxy actor (this node) ── post ──▶ remote actor
    /// ```
    ///
    /// The proxy hands every message it receives on with
    /// [`post`](Self::post), in the order received, never waiting: what the
    /// remote actor's window has no room for waits in the node's outbox.
    /// `cast!`, `send_message`, ractor timers, `OutputPort`s and supervision
    /// work on it as on any actor. It stops when the remote actor can no
    /// longer be reached (its [`monitor`](Self::monitor) fires, or a send
    /// finds it gone), with the reason as its stop reason; stopping the
    /// proxy does not stop the remote actor. Like any ractor actor it is
    /// not stopped by dropping its `ActorRef`s: each call spawns one more
    /// proxy, which lives until the remote actor is gone or someone stops
    /// it. Make one per remote actor and keep it (or stop it when done),
    /// not one per message.
    ///
    /// **What cannot go through it:** a message carrying ractor's
    /// `RpcReplyPort` (`call`, `call!`, `call_t!` on the proxy). The proxy
    /// owns such a message, but serde encodes by reference and cannot move
    /// the port out of it, and only the caller's own
    /// [`call`](Self::call) can await a port that travelled. Such a message
    /// fails to encode ([`rpc_reply::OUTSIDE_CALL`]): the proxy logs it at
    /// warn and drops it with its port, so the caller gets
    /// `CallResult::SenderError` (`call!`: `Messaging(ChannelClosed)`) at
    /// once, never a hang. Call the `RemoteActorRef` directly instead, or
    /// give the message a tether [`ReplyPort`], which goes through; from
    /// `call!`, with [`rpc_reply::to_reply_port`]:
    ///
    /// ```
    /// # use ractor::{call, cast, ActorRef, RactorErr};
    /// # use tether::ReplyPort;
    /// # use tether_ractor::rpc_reply::to_reply_port;
    /// #[derive(serde::Serialize, serde::Deserialize)]
    /// enum CounterMsg {
    ///     Add(u64),
    ///     Get(ReplyPort<u64>),
    /// }
    ///
    /// // Works with a local counter and with `remote.to_actor_ref().await?`.
    /// async fn add_one(counter: ActorRef<CounterMsg>) -> Result<u64, RactorErr<CounterMsg>> {
    ///     cast!(counter, CounterMsg::Add(1))?;
    ///     call!(counter, |port| CounterMsg::Get(to_reply_port(port)))
    /// }
    /// ```
    ///
    /// Nothing else is lost silently: a message the node's outbox refuses
    /// (past [`Config::max_outbox`](tether::Config::max_outbox)) is counted
    /// and logged by the node, one that does not encode is logged by the
    /// proxy.
    ///
    /// # Errors
    ///
    /// ractor's [`SpawnErr`] if the proxy actor does not start.
    pub async fn to_actor_ref(&self) -> Result<ActorRef<M>, SpawnErr> {
        crate::proxy::spawn(self.clone(), None).await
    }

    /// [`to_actor_ref`](Self::to_actor_ref), with the proxy linked to
    /// `supervisor`: it is told (`ActorTerminated`, with the reason) when
    /// the proxy stops because the remote actor is gone.
    ///
    /// # Errors
    ///
    /// ractor's [`SpawnErr`] if the proxy actor does not start.
    pub async fn to_actor_ref_linked(&self, supervisor: ActorCell) -> Result<ActorRef<M>, SpawnErr> {
        crate::proxy::spawn(self.clone(), Some(supervisor)).await
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
