//! ractor's `RpcReplyPort<R>` in a message that crosses nodes.
//!
//! Mark the field with `#[serde(with = "tether_ractor::rpc_reply")]` and the
//! message enum stays the one a local ractor program uses:
//!
//! ```
//! use ractor::RpcReplyPort;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! enum CounterMsg {
//!     Add(u64),
//!     Get(#[serde(with = "tether_ractor::rpc_reply")] RpcReplyPort<u64>),
//! }
//! ```
//!
//! `call!(remote, CounterMsg::Get)` (or [`RemoteActorRef::call`]) then works
//! on a [`RemoteActorRef`], and the handler answers with
//! `RpcReplyPort::send` as it always did.
//!
//! # How, and the one rule
//!
//! serde serializes by reference, so the port itself cannot travel: it
//! stays in the caller's message. [`RemoteActorRef::call`] therefore
//! encodes the request inside a scope of its own; there the field's
//! serializer makes a tether one-shot channel, writes its sender into the
//! message (a port of the connection, like [`tether::ReplyPort`]) and leaves
//! its receiver to the call, which awaits it. On the actor's node the field
//! deserializes into a real `RpcReplyPort` with a small task behind it that
//! sends its answer back on the tether channel.
//!
//! **The rule:** a message carrying an `RpcReplyPort` is sent with
//! [`RemoteActorRef::call`] (`call!`, `call_t!`), the one call that made the
//! port. Sent any other way (`cast`, `send`, a [`RemoteGroup`], the proxy
//! [`RemoteActorRef::to_actor_ref`] makes) it does not encode: the send fails
//! with the serde error [`OUTSIDE_CALL`] (also logged at warn), the message and
//! its port are dropped, and a local caller awaiting the port gets
//! `CallResult::SenderError`. A message that must travel other ways holds a
//! [`tether::ReplyPort`] instead (see [`to_reply_port`]).
//!
//! # Who owns the forwarding task
//!
//! The answer does: the task on the actor's node ends when the handler
//! answers or drops the port, when the caller is gone (it gave up, timed
//! out or dropped its future; the handler's `RpcReplyPort::is_closed` then
//! turns true), or when the connection ends.
//!
//! [`RemoteActorRef`]: crate::RemoteActorRef
//! [`RemoteActorRef::call`]: crate::RemoteActorRef::call
//! [`RemoteActorRef::to_actor_ref`]: crate::RemoteActorRef::to_actor_ref
//! [`RemoteGroup`]: crate::RemoteGroup

use std::any::{Any, TypeId};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ractor::RpcReplyPort;
use serde::de::Error as _;
use serde::ser::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tether::{oneshot, RemoteMessage, ReplyPort};

/// The serde error of an `RpcReplyPort` encoded outside
/// [`RemoteActorRef::call`](crate::RemoteActorRef::call), also logged at
/// warn (a codec may drop a custom error's text: postcard does).
pub const OUTSIDE_CALL: &str = "an RpcReplyPort travels only in the request of RemoteActorRef::call (call!, call_t!); \
     send other messages with a tether::ReplyPort";

/// An `RpcReplyPort` whose reply type is not the call's: the message carries
/// a port the call did not make.
const OTHER_TYPE: &str = "this RpcReplyPort's reply type is not the one RemoteActorRef::call awaits: \
     a request carries only the port the call made";

tokio::task_local! {
    /// Set while [`RemoteActorRef::call`](crate::RemoteActorRef::call)
    /// sends its request: where the field's serializer leaves the receiver.
    static CALL: Arc<Mutex<Slot>>;
}

/// One call's view of its request's encoding.
pub(crate) struct Slot {
    /// The reply type the call awaits.
    want: TypeId,
    /// A [`Pending`] of that type, once the request was encoded. A request
    /// encoded again (sent again on a reopened route) replaces it: the last
    /// encoding is the one that went.
    pending: Option<Box<dyn Any + Send>>,
}

/// The tether channel a request's port was encoded as. The sender is kept
/// until the send is over: serialized by reference, it attaches its port to
/// the receiver when the message is complete, and must live until then.
pub(crate) struct Pending<R> {
    tx: oneshot::Sender<R>,
    rx: oneshot::Receiver<R>,
}

impl<R: RemoteMessage> Pending<R> {
    /// The receiver the answer arrives on.
    pub(crate) fn into_receiver(self) -> oneshot::Receiver<R> {
        drop(self.tx);
        self.rx
    }
}

/// A call's scope: run its send inside [`Scope::run`], then take what the
/// encoding left.
pub(crate) struct Scope<R> {
    slot: Arc<Mutex<Slot>>,
    _reply: std::marker::PhantomData<fn() -> R>,
}

impl<R: RemoteMessage> Scope<R> {
    pub(crate) fn new() -> Self {
        let slot = Slot { want: TypeId::of::<R>(), pending: None };
        Scope { slot: Arc::new(Mutex::new(slot)), _reply: std::marker::PhantomData }
    }

    /// Runs `send` with this scope set: encodings it does synchronously (in
    /// its own polls) see it.
    pub(crate) async fn run<T>(&self, send: impl std::future::Future<Output = T>) -> T {
        CALL.scope(self.slot.clone(), send).await
    }

    /// The channel the request's port was encoded as; `None` if it was not
    /// encoded (delivered to an actor on this node, as it is).
    pub(crate) fn take(&self) -> Option<Pending<R>> {
        let pending = self.slot.lock().unwrap_or_else(|e| e.into_inner()).pending.take()?;
        // The serializer stores only a `Pending` of the wanted type.
        pending.downcast::<Pending<R>>().ok().map(|p| *p)
    }
}

/// What the field is on the wire: the tether channel's sender and the
/// port's timeout (so the handler's `get_timeout` reads what the caller set).
#[derive(Serialize, Deserialize)]
struct Wire<S> {
    reply: S,
    timeout: Option<Duration>,
}

/// Serializes an `RpcReplyPort` as a tether reply channel; only inside
/// [`RemoteActorRef::call`](crate::RemoteActorRef::call) (see the
/// [module docs](self)).
///
/// # Errors
///
/// [`OUTSIDE_CALL`] outside a call; an error if the port's reply type is
/// not the call's, or the encoder is not tether's.
pub fn serialize<R, S>(port: &RpcReplyPort<R>, s: S) -> Result<S::Ok, S::Error>
where
    R: RemoteMessage,
    S: Serializer,
{
    // Logged here too: not every codec keeps a custom error's text
    // (postcard reports "Serde Serialization Error").
    let Ok(slot) = CALL.try_with(Arc::clone) else {
        tracing::warn!("{OUTSIDE_CALL}");
        return Err(S::Error::custom(OUTSIDE_CALL));
    };
    if slot.lock().unwrap_or_else(|e| e.into_inner()).want != TypeId::of::<R>() {
        tracing::warn!("{OTHER_TYPE}");
        return Err(S::Error::custom(OTHER_TYPE));
    }
    let (tx, rx) = oneshot::channel::<R>();
    let out = Wire { reply: &tx, timeout: port.get_timeout() }.serialize(s)?;
    slot.lock().unwrap_or_else(|e| e.into_inner()).pending = Some(Box::new(Pending { tx, rx }));
    Ok(out)
}

/// Deserializes a live `RpcReplyPort`: its answer goes back to the caller's
/// node. Must run within a tokio runtime (a node's decoding always does).
///
/// # Errors
///
/// When the field is not a tether reply channel of this message, or there
/// is no tokio runtime to forward the answer from.
pub fn deserialize<'de, R, D>(d: D) -> Result<RpcReplyPort<R>, D::Error>
where
    R: RemoteMessage,
    D: Deserializer<'de>,
{
    let Wire { reply, timeout } = Wire::<oneshot::Sender<R>>::deserialize(d)?;
    let rt = tokio::runtime::Handle::try_current()
        .map_err(|_| D::Error::custom("an RpcReplyPort is received only within a tokio runtime"))?;
    let (tx, rx) = ractor::concurrency::oneshot();
    rt.spawn(forward(rx, reply));
    Ok(match timeout {
        Some(t) => RpcReplyPort::from((tx, t)),
        None => RpcReplyPort::from(tx),
    })
}

/// Sends the handler's answer on to the caller. Ends with the answer, with
/// the handler dropping its port (dropping `reply` tells the caller at
/// once), or when the caller is gone (dropping `answer` closes the
/// handler's port).
async fn forward<R: RemoteMessage>(mut answer: ractor::concurrency::OneshotReceiver<R>, reply: oneshot::Sender<R>) {
    let answered = tokio::select! {
        biased;
        answered = &mut answer => answered.ok(),
        () = reply.closed() => None,
    };
    let Some(value) = answered else { return };
    if let Err(e) = reply.send(value) {
        // Gone meanwhile is not news; an answer that cannot travel is: the
        // caller sees only that the port closed unanswered.
        if !e.is_closed() {
            tracing::warn!(error = %e, "the answer to a remote call was not sent");
        }
    }
}

/// A tether [`ReplyPort`] that answers a ractor `RpcReplyPort`: for a
/// message that holds a `ReplyPort` (so it can travel any way, through
/// [`RemoteActorRef::to_actor_ref`](crate::RemoteActorRef::to_actor_ref)'s
/// proxy too), built by ractor's `call!`, which hands out `RpcReplyPort`s:
///
/// ```
/// # use ractor::{call, ActorRef, RactorErr};
/// # use tether::ReplyPort;
/// # use tether_ractor::rpc_reply::to_reply_port;
/// #[derive(serde::Serialize, serde::Deserialize)]
/// enum CounterMsg {
///     Get(ReplyPort<u64>),
/// }
///
/// async fn total(counter: &ActorRef<CounterMsg>) -> Result<u64, RactorErr<CounterMsg>> {
///     call!(counter, |port| CounterMsg::Get(to_reply_port(port)))
/// }
/// ```
///
/// A task sends the `ReplyPort`'s answer on to the `RpcReplyPort`; it ends
/// with the answer, when the `ReplyPort` is dropped, or when the port's
/// timeout (if it has one, as `call_t!`'s do) has passed. Must be called
/// within a tokio runtime.
pub fn to_reply_port<R: RemoteMessage>(port: RpcReplyPort<R>) -> ReplyPort<R> {
    let (reply, answer) = ReplyPort::channel();
    let limit = port.get_timeout();
    tokio::spawn(async move {
        let answered = match limit {
            Some(limit) => tokio::time::timeout(limit, answer).await.ok(),
            None => Some(answer.await),
        };
        if let Some(Ok(value)) = answered {
            // A caller that gave up is not news.
            let _ = port.send(value);
        }
    });
    reply
}
