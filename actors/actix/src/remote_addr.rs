//! `RemoteAddr<M>`: actix's `Recipient<M>`, for an actor on any node.

use std::fmt;
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::time::Duration;

use actix::{Message, Recipient};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tether::{
    oneshot, ActorId, AskError, AskPermit, LookupError, Monitor, Node, NodeId, OpenRequest, RemoteError, RemoteMessage,
    RemoteRef, Replies, ReplyStream, RequestPort, TellError, WatchEvent,
};
use tokio::task::JoinHandle;

use crate::envelope::{Envelope, Kind, Reply};
use crate::RemoteMailboxError;

/// How long [`RemoteAddr::send`] waits for the result: 10 s. actix's own
/// `send` waits forever, which across a network only hides a lost peer;
/// the core notices a silent peer within its `idle_timeout` (5 s by
/// default), so 10 s leaves room for a slow handler.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// The address of an actix actor that may live on another node, for
/// messages of type `M`: actix's [`Recipient<M>`] across processes.
///
/// Get one from [`export`](crate::export) or [`lookup`](crate::lookup), or
/// receive one inside a message: it is `Serialize + Deserialize`, and live
/// on the node that decodes it. Clones share one outbox, so messages from a
/// handle and its clones reach the actor in the order they were accepted.
/// Two handles to one actor are equal and hash alike.
///
/// Sending, by how it waits:
///
/// | method | waits for | when the window is full |
/// |---|---|---|
/// | [`do_send`](Self::do_send) | nothing | queued, as actix queues it |
/// | [`try_send`](Self::try_send) | nothing | `Err(TellError::Full(msg))` |
/// | [`tell`](Self::tell) | room | waits |
/// | [`send`](Self::send) | room and the result | waits, within the timeout |
///
/// The *window* of a handle is the route's window on the connection (the
/// send buffer here, the port window at the actor's node). The actor's node
/// hands fewer than 512 of a route's messages to the actor's actix mailbox
/// before it waits for the actor to handle them, and meanwhile reads no
/// more from the route, so a blocked actor fills the window, and then
/// `try_send` fails with `Full` and `tell` and `send` wait. `do_send`, which
/// actix defines as never failing, queues what finds no room in the node's
/// outbox instead: up to [`tether::Config::max_outbox`] messages for all
/// actors together (a million by default), each held as the message value
/// until the window takes it. Past that cap a `do_send` is dropped, counted
/// in [`tether::NodeStats::outbox_refused`] and the connection's
/// [`tether::ConnectionStats::refused`], and logged at warn with the count.
///
/// Messages from this node to one actor arrive in the order they were
/// accepted, whichever of these methods sent them. A handle just received
/// in a message works at once: what is sent before its route is open waits
/// for it (within the same bounds).
///
/// Methods that need a background task (to open a route, hand over queued
/// messages, or watch) run it on the tokio runtime current at the call, or
/// else the one the handle was made on.
pub struct RemoteAddr<M: Message> {
    rref: RemoteRef<Envelope<M>>,
}

/// Sent to a local actor watching a remote one (see [`RemoteAddr::watch`]):
/// the remote actor can no longer be reached, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Terminated {
    /// The actor that was watched.
    pub actor: ActorId,
    /// Why: it stopped or failed (with the text its framework gave, if the
    /// actor is not an actix one), or its node left, was lost or restarted.
    pub event: WatchEvent,
}

impl Message for Terminated {
    type Result = ();
}

/// How a request ended, for callers that may try another actor
/// ([`RemoteAddr::request`]).
pub(crate) enum Requested<M: Message> {
    /// The handler's result.
    Answered(M::Result),
    /// Never handed over; the message comes back.
    NotSent(M, RemoteMailboxError),
    /// Handed over (or uncarriable), and no result.
    Failed(RemoteMailboxError),
}

/// Finds the actor exported as `name` on the connected node `peer`, checking
/// that it takes messages of type `M` (a mismatch is
/// [`RemoteError::TypeMismatch`], reported at once).
pub async fn lookup<M>(node: &Node, peer: NodeId, name: &str) -> Result<RemoteAddr<M>, LookupError>
where
    M: Message + RemoteMessage,
    M::Result: RemoteMessage,
{
    node.lookup::<Envelope<M>>(peer, name).await.map(RemoteAddr::from)
}

impl<M> RemoteAddr<M>
where
    M: Message + RemoteMessage,
    M::Result: RemoteMessage,
{
    /// Sends a message without waiting and without a result, like actix's
    /// `do_send`: it never fails, and a message that finds no room waits in
    /// the node's outbox (see the [type's docs](Self) for the cap).
    ///
    /// A message to an actor that stopped is dropped, as actix drops it
    /// (logged at debug; [`monitor`](Self::monitor) tells when the actor is
    /// gone). One that cannot be carried (it does not encode, or is larger
    /// than the connection allows) is logged at warn; use
    /// [`try_send`](Self::try_send) or [`tell`](Self::tell) to have such
    /// errors returned.
    pub fn do_send(&self, msg: M) {
        log_do_send(self.id(), self.rref.post(Envelope(Kind::Tell { msg })));
    }

    /// [`do_send`](Self::do_send), saying why a message was not accepted.
    pub(crate) fn post(&self, msg: M) -> Result<(), TellError<M>> {
        self.rref.post(Envelope(Kind::Tell { msg })).map_err(unwrap_tell)
    }

    /// Sends a message if there is room in the window now; never waits.
    ///
    /// `Full` when the window is full (the actor is slow or the connection
    /// is congested) or messages sent before it still wait for room;
    /// `Unreachable` when the actor stopped or cannot be reached; `Send`
    /// when the message does not encode or exceeds the peer's limit. `Ok`
    /// means accepted: it will be delivered in order unless the actor stops
    /// or its node is lost first.
    pub fn try_send(&self, msg: M) -> Result<(), TellError<M>> {
        self.rref.try_tell(Envelope(Kind::Tell { msg })).map_err(unwrap_tell)
    }

    /// Sends a message without a result, waiting while the window is full.
    /// Fails with `Unreachable` when the actor stopped or cannot be
    /// reached, with `Send` when the message cannot be carried.
    pub async fn tell(&self, msg: M) -> Result<(), TellError<M>> {
        self.rref.tell(Envelope(Kind::Tell { msg })).await.map_err(unwrap_tell)
    }

    /// Sends a message and waits for the handler's result, at most
    /// [`DEFAULT_TIMEOUT`]. See [`send_timeout`](Self::send_timeout).
    pub fn send(&self, msg: M) -> impl Future<Output = Result<M::Result, RemoteMailboxError>> + Send + 'static {
        self.send_timeout(msg, DEFAULT_TIMEOUT)
    }

    /// Sends a message and waits for the handler's result, at most
    /// `timeout` in all (waiting for room included).
    ///
    /// The result is whatever the handler's [`actix::MessageResponse`]
    /// produces (plain values, `ResponseFuture`, `ResponseActFuture`, ...),
    /// so `M::Result` must be serializable. Dropping the future, or the
    /// timeout, cancels the request: if it has not reached the handler yet,
    /// the actor never handles it. It needs no actix context; await it in
    /// a handler with `ctx.spawn(fut.into_actor(self))` or a
    /// `ResponseFuture`.
    pub fn send_timeout(
        &self,
        msg: M,
        timeout: Duration,
    ) -> impl Future<Output = Result<M::Result, RemoteMailboxError>> + Send + 'static {
        let request = self.request(msg, timeout);
        async move {
            match request.await {
                Requested::Answered(result) => Ok(result),
                Requested::NotSent(_, e) | Requested::Failed(e) => Err(e),
            }
        }
    }

    /// [`send_timeout`](Self::send_timeout), saying whether the request was
    /// handed over: one that was not (the actor stopped or cannot be
    /// reached, too many requests pending on its node) comes back, so that
    /// a group can try another member.
    pub(crate) fn request(&self, msg: M, timeout: Duration) -> impl Future<Output = Requested<M>> + Send + 'static {
        request_on(&self.rref, msg, timeout)
    }

    /// Sends the message `make` builds around a [`ReplyStream`] and returns
    /// the stream of replies the handler sends on it (see
    /// [`RemoteRef::ask_stream`]). actix has no streaming result; the
    /// message's handler (`Result = ()`) keeps the `ReplyStream` and sends
    /// from a future it spawns, and an actor takes the [`Replies`] into its
    /// own mailbox with `ctx.add_stream(replies)`.
    ///
    /// ```no_run
    /// use actix::prelude::*;
    /// use tether::ReplyStream;
    ///
    /// #[derive(Message, serde::Serialize, serde::Deserialize)]
    /// #[rtype(result = "()")]
    /// struct Tail { lines: ReplyStream<String> }
    ///
    /// struct Log;
    /// impl Actor for Log { type Context = Context<Self>; }
    /// impl Handler<Tail> for Log {
    ///     type Result = ();
    ///     fn handle(&mut self, Tail { lines }: Tail, ctx: &mut Context<Self>) {
    ///         ctx.spawn(async move {
    ///             for n in 0..3 {
    ///                 if lines.send(format!("line {n}")).await.is_err() {
    ///                     return; // the asker is gone
    ///                 }
    ///             }
    ///             lines.end().await;
    ///         }.into_actor(self));
    ///     }
    /// }
    ///
    /// # async fn demo(log: tether_actix::RemoteAddr<Tail>) -> Result<(), tether_actix::RemoteMailboxError> {
    /// let mut lines = log.ask_stream(|lines| Tail { lines }).await?;
    /// while let Some(line) = lines.next().await {
    ///     println!("{}", line.map_err(|e| tether_actix::RemoteMailboxError::Message(e.to_string()))?);
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`send`](Self::send) fails before an answer: the actor stopped or
    /// cannot be reached, too many requests pending, or the message cannot
    /// be carried.
    pub async fn ask_stream<R: RemoteMessage>(
        &self,
        make: impl FnOnce(ReplyStream<R>) -> M,
    ) -> Result<Replies<R>, RemoteMailboxError> {
        self.rref.ask_stream(|replies| Envelope(Kind::Tell { msg: make(replies) })).await.map_err(request_error)
    }

    /// Sends the message `make` builds around a [`RequestPort`] and returns
    /// the asker's end of the request: updates go both ways until the
    /// handler responds (see [`RemoteRef::open_request`]). As with
    /// [`ask_stream`](Self::ask_stream), the handler keeps the port and
    /// works it from a future it spawns.
    ///
    /// # Errors
    ///
    /// As [`ask_stream`](Self::ask_stream).
    pub async fn open_request<U, D, R>(
        &self,
        make: impl FnOnce(RequestPort<U, D, R>) -> M,
    ) -> Result<OpenRequest<U, D, R>, RemoteMailboxError>
    where
        U: RemoteMessage,
        D: RemoteMessage,
        R: RemoteMessage,
    {
        self.rref.open_request(|port| Envelope(Kind::Tell { msg: make(port) })).await.map_err(request_error)
    }

    /// Watches the actor: resolves once, with why it can no longer be
    /// reached.
    pub fn monitor(&self) -> Monitor {
        self.rref.monitor()
    }

    /// Death watch in actix's form: sends [`Terminated`] to `watcher` (an
    /// `Addr` of an actor that handles it, or a `Recipient`) when the actor
    /// stops or fails, or its node leaves, is lost or restarts. Abort the
    /// returned handle to stop watching.
    ///
    /// The watch is sent on its way before this returns (when the
    /// connection to the actor's node is up), so an end that comes after is
    /// reported with its reason.
    pub fn watch(&self, watcher: impl Into<Recipient<Terminated>>) -> JoinHandle<()> {
        watch(self.monitor(), self.id(), watcher.into())
    }

    /// An actix [`Recipient<M>`] for the actor, for code written against
    /// actix's own types: a local actor forwards what the recipient is
    /// given, `do_send` and `try_send` as [`do_send`](Self::do_send), `send`
    /// as [`send`](Self::send). A `send` that fails remotely reads as
    /// [`actix::MailboxError::Closed`] (actix's recipient has no richer
    /// error; a timeout set with `.timeout(..)` stays a timeout). Must be
    /// called within an actix `System`.
    pub fn recipient(&self) -> Recipient<M> {
        crate::forward::Forward::start_for(self.clone())
    }

    /// The actor's identity.
    pub fn id(&self) -> ActorId {
        self.rref.id()
    }

    /// The framework-neutral handle underneath.
    pub fn remote_ref(&self) -> &RemoteRef<Envelope<M>> {
        &self.rref
    }
}

/// Logs what a `do_send` could not hand over, as actix would have it: a
/// stopped actor at debug, a message that cannot be carried at warn. (A
/// full outbox is counted and logged by the node.)
pub(crate) fn log_do_send<T>(actor: ActorId, posted: Result<(), TellError<T>>) {
    match posted {
        Ok(()) | Err(TellError::Full(_)) => {}
        Err(TellError::Unreachable { error, .. }) => {
            tracing::debug!(%actor, %error, "do_send: actor unreachable, message dropped")
        }
        Err(error) => tracing::warn!(%actor, %error, "do_send: message not sent"),
    }
}

/// Sends [`Terminated`] to `watcher` once `monitor` resolves. The watch
/// was placed when the monitor was made, so it is on its way to the actor's
/// node (if connected) before this returns: an end right after is heard
/// with how the actor ended.
pub(crate) fn watch(monitor: Monitor, actor: ActorId, watcher: Recipient<Terminated>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let event = monitor.await;
        watcher.do_send(Terminated { actor, event });
    })
}

impl<M> From<RemoteRef<Envelope<M>>> for RemoteAddr<M>
where
    M: Message + RemoteMessage,
    M::Result: RemoteMessage,
{
    fn from(rref: RemoteRef<Envelope<M>>) -> Self {
        RemoteAddr { rref }
    }
}

impl<M: Message> Clone for RemoteAddr<M> {
    fn clone(&self) -> Self {
        RemoteAddr { rref: self.rref.clone() }
    }
}

impl<M: Message> PartialEq for RemoteAddr<M> {
    fn eq(&self, other: &Self) -> bool {
        self.rref == other.rref
    }
}

impl<M: Message> Eq for RemoteAddr<M> {}

impl<M: Message> Hash for RemoteAddr<M> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.rref.hash(state)
    }
}

impl<M> fmt::Debug for RemoteAddr<M>
where
    M: Message + RemoteMessage,
    M::Result: RemoteMessage,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let id = self.rref.id();
        write!(f, "RemoteAddr(node {}, actor {:016x})", id.node, id.id)
    }
}

impl<M> Serialize for RemoteAddr<M>
where
    M: Message + RemoteMessage,
    M::Result: RemoteMessage,
{
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.rref.serialize(s)
    }
}

impl<'de, M> Deserialize<'de> for RemoteAddr<M>
where
    M: Message + RemoteMessage,
    M::Result: RemoteMessage,
{
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        RemoteRef::<Envelope<M>>::deserialize(d).map(RemoteAddr::from)
    }
}

/// A route's message type that carries actix envelopes of `M`: the
/// envelope itself, or the one route of a `RemoteActor`.
pub(crate) trait Carries<M: Message>: RemoteMessage + Sized {
    fn wrap(env: Envelope<M>) -> Self;
    /// The message back, from what `wrap` made.
    fn unwrap(self) -> M {
        self.split().0
    }
    /// The message and, apart, whatever else travels with it (a reply
    /// port), to be dropped after the message is dealt with.
    fn split(self) -> (M, Box<dyn std::any::Any + Send>);
}

impl<M> Carries<M> for Envelope<M>
where
    M: Message + RemoteMessage,
    M::Result: RemoteMessage,
{
    fn wrap(env: Envelope<M>) -> Self {
        env
    }

    fn split(self) -> (M, Box<dyn std::any::Any + Send>) {
        self.split_msg()
    }
}

/// Sends a request on `rref` and waits for the result, at most `timeout`.
/// Queued at once, as actix's `send` queues before its future is polled: a
/// `do_send` after it stays after it. Only a full outbox makes it wait, as
/// a full mailbox makes actix's `send` wait.
pub(crate) fn request_on<M, R>(
    rref: &RemoteRef<R>,
    msg: M,
    timeout: Duration,
) -> impl Future<Output = Requested<M>> + Send + 'static
where
    M: Message + RemoteMessage,
    M::Result: RemoteMessage,
    R: Carries<M>,
{
    let started = start_request(rref, msg);
    let (rref, node) = (rref.clone(), rref.id().node);
    async move {
        let (permit, result, mut failed) = match started {
            Started::Queued(permit, result, failed) => (permit, result, failed),
            Started::Refused(not_sent) => return not_sent,
            Started::Wait(permit, env, result, failed) => {
                // Rare (the node's outboxes are full): boxed, so that the
                // common request's future stays small to move.
                let waited = tokio::time::timeout(timeout, Box::pin(rref.tell(env))).await;
                match waited {
                    Ok(Ok(())) => (permit, result, failed),
                    Ok(Err(TellError::Unreachable { msg, error })) => {
                        return Requested::NotSent(msg.unwrap(), RemoteMailboxError::from_remote(error))
                    }
                    Ok(Err(other)) => return Requested::Failed(RemoteMailboxError::Message(other.to_string())),
                    Err(_) => return Requested::Failed(RemoteMailboxError::Timeout(timeout)),
                }
            }
        };
        let answer = async {
            match result.await {
                Ok(Ok(r)) => Requested::Answered(r),
                Ok(Err(why)) => {
                    Requested::Failed(RemoteMailboxError::Message(format!("the result could not be sent back: {why}")))
                }
                // The outbox could not deliver it (it says so before it lets
                // go of the request), or the actor stopped before answering.
                Err(oneshot::RecvError::Dropped) => match (&mut failed).await {
                    Ok(Undelivered { msg, error, unreachable: true }) => Requested::NotSent(msg, error),
                    Ok(Undelivered { error, .. }) => Requested::Failed(error),
                    Err(_) => Requested::Failed(RemoteMailboxError::Closed),
                },
                Err(oneshot::RecvError::Connection(_)) => {
                    Requested::Failed(RemoteMailboxError::Unreachable(RemoteError::NodeLost(node)))
                }
                Err(other) => Requested::Failed(RemoteMailboxError::Message(other.to_string())),
            }
        };
        let outcome = match tokio::time::timeout(timeout, answer).await {
            Ok(r) => r,
            Err(_) => Requested::Failed(RemoteMailboxError::Timeout(timeout)),
        };
        drop(permit);
        outcome
    }
}

/// A queued request the outbox could not deliver.
struct Undelivered<M> {
    msg: M,
    error: RemoteMailboxError,
    /// The actor could not be reached, so the request never left and may be
    /// tried on another member; any other failure (too large, would not
    /// encode) would be the same anywhere.
    unreachable: bool,
}

/// Why a request was not sent, in actix's terms.
fn request_error(e: AskError) -> RemoteMailboxError {
    match e {
        AskError::TooManyPending { limit } => RemoteMailboxError::TooManyPending { limit },
        AskError::Unreachable(e) => RemoteMailboxError::from_remote(e),
        other => RemoteMailboxError::Message(other.to_string()),
    }
}

/// Takes a permit and queues the request.
fn start_request<M, R>(rref: &RemoteRef<R>, msg: M) -> Started<M, R>
where
    M: Message + RemoteMessage,
    M::Result: RemoteMessage,
    R: Carries<M>,
{
    let permit = match rref.ask_permit() {
        Ok(p) => p,
        Err(AskError::TooManyPending { limit }) => {
            return Started::Refused(Requested::NotSent(msg, RemoteMailboxError::TooManyPending { limit }))
        }
        Err(AskError::Unreachable(e)) => {
            return Started::Refused(Requested::NotSent(msg, RemoteMailboxError::Unreachable(e)))
        }
        Err(other) => return Started::Refused(Requested::NotSent(msg, RemoteMailboxError::Message(other.to_string()))),
    };
    let (reply, result) = oneshot::channel::<Reply<M::Result>>();
    let (tell_failure, failed) = tokio::sync::oneshot::channel();
    let report = move |e: TellError<R>| {
        // Said before the request (and its reply port) is dropped.
        let (error, unreachable) = match &e {
            TellError::Unreachable { error, .. } => (RemoteMailboxError::from_remote(error.clone()), true),
            other => (RemoteMailboxError::Message(other.to_string()), false),
        };
        let (msg, reply) = R::split(e.into_inner());
        let _ = tell_failure.send(Undelivered { msg, error, unreachable });
        drop(reply);
    };
    match rref.try_post(R::wrap(Envelope(Kind::Send { msg, reply })), report) {
        Ok(()) => Started::Queued(permit, result, failed),
        Err(TellError::Full(env)) => Started::Wait(permit, env, result, failed),
        Err(TellError::Unreachable { msg, error }) => {
            Started::Refused(Requested::NotSent(msg.unwrap(), RemoteMailboxError::from_remote(error)))
        }
        Err(other) => Started::Refused(Requested::Failed(RemoteMailboxError::Message(other.to_string()))),
    }
}

/// Where the outbox says it could not deliver a request.
type Failed<M> = tokio::sync::oneshot::Receiver<Undelivered<M>>;

/// Where a request stands once `start_request` returns.
enum Started<M: Message, R> {
    /// Queued; the answer arrives on the receiver, or the outbox says why
    /// it could not deliver the request.
    Queued(AskPermit, oneshot::Receiver<Reply<M::Result>>, Failed<M>),
    /// The outbox is full: to be sent once it has room.
    Wait(AskPermit, R, oneshot::Receiver<Reply<M::Result>>, Failed<M>),
    /// Not sent, and why.
    Refused(Requested<M>),
}

/// A tell's error with the message taken out of what carried it.
pub(crate) fn unwrap_tell<M: Message, R: Carries<M>>(e: TellError<R>) -> TellError<M> {
    match e {
        TellError::Full(env) => TellError::Full(env.unwrap()),
        TellError::Unreachable { msg, error } => TellError::Unreachable { msg: msg.unwrap(), error },
        TellError::Send(e) => {
            let (env, error) = e.split();
            TellError::Send(error.with_value(env.unwrap()))
        }
        other => TellError::Send(tether::mpsc::SendError::Closed(other.into_inner().unwrap())),
    }
}
