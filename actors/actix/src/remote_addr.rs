//! `RemoteAddr<M>`: actix's `Recipient<M>`, for an actor on any node.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use actix::{Message, Recipient};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tether::{
    oneshot, ActorId, AskError, LookupError, Monitor, Node, NodeId, RemoteError, RemoteMessage, RemoteRef, TellError,
    WatchEvent,
};
use tokio::runtime::Handle;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::envelope::{Envelope, Kind};
use crate::RemoteMailboxError;

/// How long [`RemoteAddr::send`] waits for the result: 10 s. actix's own
/// `send` waits forever, which across a network only hides a lost peer;
/// the core notices a silent peer within its `idle_timeout` (5 s by
/// default), so 10 s leaves room for a slow handler.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Messages a handle holds back while the route's window is full or the
/// route is being opened.
const OUTBOX: usize = 256;

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
/// | [`do_send`](Self::do_send) | nothing | the message is dropped (logged) |
/// | [`try_send`](Self::try_send) | nothing | `Err(TellError::Full(msg))` |
/// | [`tell`](Self::tell) | room | waits |
/// | [`send`](Self::send) | room and the result | waits, within the timeout |
///
/// The *window* of a handle is the route's window on the connection (the
/// send buffer here, the port window at the actor's node) plus an outbox of
/// 256 messages, which also holds what is sent while the route is being
/// opened. The actor's node hands fewer than 512 of a route's messages to
/// the actor's actix mailbox before it waits for the actor to handle them,
/// and meanwhile reads no more from the route. A blocked actor therefore
/// makes `try_send` fail with `Full` once the window is full, and memory at
/// the sender stays bounded. A handle to an actor of this node has no
/// connection: its window is those 512 messages and the outbox.
///
/// Methods that may need a background task (to open a route, wait for
/// room, or watch) run it on the tokio runtime current at the call, or
/// else the one the handle was made on.
pub struct RemoteAddr<M: Message> {
    link: Arc<Link<M>>,
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
    /// Sends a message without waiting and without a result.
    ///
    /// Never blocks. Unlike actix's `do_send`, which queues without limit,
    /// a message that finds the window full is dropped, with a warning in
    /// the log; one sent to a stopped or unreachable actor is dropped
    /// silently, as in actix. Use [`tell`](Self::tell) to wait for room
    /// instead, or [`try_send`](Self::try_send) to get the message back.
    pub fn do_send(&self, msg: M) {
        match self.link.submit(Pending::Tell(msg)) {
            Ok(()) => self.link.lock().dropping = false,
            Err(Refused::Full(_)) => {
                let mut st = self.link.lock();
                if !std::mem::replace(&mut st.dropping, true) {
                    tracing::warn!(actor = ?self.link.rref, "window full: do_send drops messages");
                }
            }
            Err(Refused::Closed(..)) => {}
            Err(Refused::Unsent(_, error)) => {
                tracing::warn!(actor = ?self.link.rref, %error, "do_send: message not sent");
            }
        }
    }

    /// Sends a message if there is room in the window now; never waits.
    ///
    /// `Full` when the window is full (the actor is slow or the connection
    /// is congested); `Unreachable` when the actor stopped or cannot be
    /// reached; `Send` when the message does not encode or exceeds the
    /// peer's limit. `Ok` means accepted: it will be delivered in order
    /// unless the actor stops or its node is lost first.
    pub fn try_send(&self, msg: M) -> Result<(), TellError<M>> {
        self.link.submit(Pending::Tell(msg)).map_err(Refused::into_tell_error)
    }

    /// Sends a message without a result, waiting while the window is full.
    /// Fails with `Unreachable` when the actor stopped or cannot be
    /// reached, with `Send` when the message cannot be carried.
    pub async fn tell(&self, msg: M) -> Result<(), TellError<M>> {
        self.link.submit_wait(Pending::Tell(msg)).await.map_err(Refused::into_tell_error)
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
        let link = self.link.clone();
        async move {
            let _permit = match link.rref.ask_permit() {
                Ok(p) => p,
                Err(AskError::TooManyPending { limit }) => {
                    return Requested::NotSent(msg, RemoteMailboxError::TooManyPending { limit })
                }
                Err(AskError::Unreachable(e)) => return Requested::NotSent(msg, RemoteMailboxError::Unreachable(e)),
                Err(other) => return Requested::NotSent(msg, RemoteMailboxError::Message(other.to_string())),
            };
            let (reply, result) = oneshot::channel::<M::Result>();
            let (failed, failure) = tokio::sync::oneshot::channel();
            let exchange = async {
                match link.submit_wait(Pending::Send(msg, reply, failed)).await {
                    Ok(()) => {}
                    Err(Refused::Closed(p, error)) => {
                        return Requested::NotSent(p.into_msg(), RemoteMailboxError::from_remote(error))
                    }
                    Err(refused) => return Requested::Failed(refused.into_mailbox_error()),
                }
                let node = link.rref.id().node;
                match result.await {
                    Ok(r) => Requested::Answered(r),
                    // Not sent (the pump says why before it drops the
                    // reply port), or the actor stopped first.
                    Err(oneshot::RecvError::Dropped) => {
                        let mut failure = failure;
                        Requested::Failed(failure.try_recv().unwrap_or(RemoteMailboxError::Closed))
                    }
                    Err(oneshot::RecvError::Connection(_)) => {
                        Requested::Failed(RemoteMailboxError::Unreachable(RemoteError::NodeLost(node)))
                    }
                    Err(other) => Requested::Failed(RemoteMailboxError::Message(other.to_string())),
                }
            };
            match tokio::time::timeout(timeout, exchange).await {
                Ok(r) => r,
                Err(_) => Requested::Failed(RemoteMailboxError::Timeout(timeout)),
            }
        }
    }

    /// Watches the actor: resolves once, with why it can no longer be
    /// reached.
    pub fn monitor(&self) -> Monitor {
        self.link.rref.monitor()
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
        use futures::FutureExt;
        let watcher = watcher.into();
        let mut monitor = self.monitor();
        let actor = self.id();
        let rt = self.link.runtime();
        // Polled once here (the task polls it again with its own waker).
        let first = {
            let _in_rt = rt.enter();
            monitor.poll_unpin(&mut std::task::Context::from_waker(std::task::Waker::noop()))
        };
        rt.spawn(async move {
            let event = match first {
                std::task::Poll::Ready(event) => event,
                std::task::Poll::Pending => monitor.await,
            };
            watcher.do_send(Terminated { actor, event });
        })
    }

    /// The actor's identity.
    pub fn id(&self) -> ActorId {
        self.link.rref.id()
    }

    /// The framework-neutral handle underneath.
    pub fn remote_ref(&self) -> &RemoteRef<Envelope<M>> {
        &self.link.rref
    }
}

impl<M> From<RemoteRef<Envelope<M>>> for RemoteAddr<M>
where
    M: Message + RemoteMessage,
    M::Result: RemoteMessage,
{
    fn from(rref: RemoteRef<Envelope<M>>) -> Self {
        RemoteAddr {
            link: Arc::new(Link {
                rref,
                rt: Handle::try_current().ok(),
                state: Mutex::new(State { outbox: VecDeque::new(), pumping: false, dropping: false }),
                space: Notify::new(),
            }),
        }
    }
}

impl<M: Message> Clone for RemoteAddr<M> {
    fn clone(&self) -> Self {
        RemoteAddr { link: self.link.clone() }
    }
}

impl<M: Message> PartialEq for RemoteAddr<M> {
    fn eq(&self, other: &Self) -> bool {
        self.link.rref == other.link.rref
    }
}

impl<M: Message> Eq for RemoteAddr<M> {}

impl<M: Message> Hash for RemoteAddr<M> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.link.rref.hash(state)
    }
}

impl<M> fmt::Debug for RemoteAddr<M>
where
    M: Message + RemoteMessage,
    M::Result: RemoteMessage,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let id = self.link.rref.id();
        write!(f, "RemoteAddr(node {}, actor {:016x})", id.node, id.id)
    }
}

impl<M> Serialize for RemoteAddr<M>
where
    M: Message + RemoteMessage,
    M::Result: RemoteMessage,
{
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.link.rref.serialize(s)
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

/// The sending state shared by a handle and its clones.
struct Link<M: Message> {
    rref: RemoteRef<Envelope<M>>,
    rt: Option<Handle>,
    state: Mutex<State<M>>,
    /// The outbox stopped being full.
    space: Notify,
}

struct State<M: Message> {
    /// Messages accepted but not yet handed to the core. While it is not
    /// empty, or the pump is sending its last message, new messages queue
    /// behind it: that is what keeps order.
    outbox: VecDeque<Pending<M>>,
    pumping: bool,
    /// `do_send` is dropping (to log once per episode).
    dropping: bool,
}

enum Pending<M: Message> {
    Tell(M),
    /// A request, its reply port, and where to say why it was not sent.
    Send(M, oneshot::Sender<M::Result>, Failed),
}

/// Where a request says why it was not sent.
type Failed = tokio::sync::oneshot::Sender<RemoteMailboxError>;

impl<M: Message> Pending<M> {
    fn into_msg(self) -> M {
        match self {
            Pending::Tell(m) | Pending::Send(m, ..) => m,
        }
    }

    fn into_envelope(self) -> (Envelope<M>, Option<Failed>) {
        match self {
            Pending::Tell(msg) => (Envelope(Kind::Tell { msg }), None),
            Pending::Send(msg, reply, failed) => (Envelope(Kind::Send { msg, reply }), Some(failed)),
        }
    }

    /// Takes an envelope the core gave back apart again.
    fn from_envelope(env: Envelope<M>, failed: Option<Failed>) -> Self {
        match env.0 {
            Kind::Tell { msg } => Pending::Tell(msg),
            Kind::Send { msg, reply } => {
                Pending::Send(msg, reply, failed.unwrap_or_else(|| tokio::sync::oneshot::channel().0))
            }
        }
    }
}

/// Why a message was not accepted; it is handed back.
enum Refused<M: Message> {
    /// No room now.
    Full(Pending<M>),
    /// The actor stopped or cannot be reached.
    Closed(Pending<M>, RemoteError),
    /// It cannot be carried: it does not encode, or is too large.
    Unsent(Pending<M>, tether::mpsc::SendError<()>),
}

impl<M> Refused<M>
where
    M: Message + RemoteMessage,
    M::Result: RemoteMessage,
{
    fn into_tell_error(self) -> TellError<M> {
        match self {
            Refused::Full(p) => TellError::Full(p.into_msg()),
            Refused::Closed(p, error) => TellError::Unreachable { msg: p.into_msg(), error },
            Refused::Unsent(p, error) => TellError::Send(error.with_value(p.into_msg())),
        }
    }

    fn into_mailbox_error(self) -> RemoteMailboxError {
        match self {
            Refused::Closed(_, error) => RemoteMailboxError::from_remote(error),
            Refused::Unsent(_, error) => RemoteMailboxError::Message(error.to_string()),
            // `submit_wait` waits for room instead.
            Refused::Full(_) => RemoteMailboxError::Message("no room".into()),
        }
    }
}

impl<M> Link<M>
where
    M: Message + RemoteMessage,
    M::Result: RemoteMessage,
{
    fn lock(&self) -> MutexGuard<'_, State<M>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn runtime(&self) -> Handle {
        Handle::try_current().ok().or_else(|| self.rt.clone()).expect("tether-actix needs a tokio runtime")
    }

    /// Accepts a message without waiting: straight to the core if nothing
    /// is queued before it and there is room, else into the outbox.
    fn submit(self: &Arc<Self>, p: Pending<M>) -> Result<(), Refused<M>> {
        let mut st = self.lock();
        let mut p = p;
        if st.outbox.is_empty() && !st.pumping {
            let (env, failed) = p.into_envelope();
            match self.rref.try_tell(env) {
                Ok(()) => return Ok(()),
                Err(TellError::Full(env)) => p = Pending::from_envelope(env, failed),
                Err(TellError::Unreachable { msg, error }) => {
                    return Err(Refused::Closed(Pending::from_envelope(msg, failed), error));
                }
                Err(TellError::Send(e)) => {
                    let (env, error) = e.split();
                    return Err(Refused::Unsent(Pending::from_envelope(env, failed), error));
                }
                Err(e) => {
                    // Nothing else comes from `try_tell`; kept as unsent.
                    let error = tether::mpsc::SendError::Closed(());
                    return Err(Refused::Unsent(Pending::from_envelope(e.into_inner(), failed), error));
                }
            }
        }
        if st.outbox.len() >= OUTBOX {
            return Err(Refused::Full(p));
        }
        st.outbox.push_back(p);
        if !st.pumping {
            st.pumping = true;
            self.runtime().spawn(self.clone().pump());
        }
        Ok(())
    }

    /// Accepts a message, waiting for room in the outbox.
    async fn submit_wait(self: &Arc<Self>, p: Pending<M>) -> Result<(), Refused<M>> {
        let mut p = match self.submit(p) {
            Ok(()) => return Ok(()),
            Err(Refused::Full(back)) => back,
            Err(refused) => return Err(refused),
        };
        loop {
            let room = self.space.notified();
            let mut room = std::pin::pin!(room);
            room.as_mut().enable();
            match self.submit(p) {
                Ok(()) => return Ok(()),
                Err(Refused::Full(back)) => p = back,
                Err(refused) => return Err(refused),
            }
            room.await;
        }
    }

    /// Hands the outbox to the core in order, waiting for the window; ends
    /// when the outbox is empty.
    async fn pump(self: Arc<Self>) {
        loop {
            let (env, failed) = {
                let mut st = self.lock();
                // Only a full outbox turns senders away.
                let was_full = st.outbox.len() >= OUTBOX;
                let Some(p) = st.outbox.pop_front() else {
                    st.pumping = false;
                    return;
                };
                if was_full {
                    self.space.notify_waiters();
                }
                p.into_envelope()
            };
            if let Kind::Send { reply, .. } = &env.0 {
                if reply.is_closed() {
                    continue; // the asker gave up while it waited here
                }
            }
            let Err(e) = self.rref.tell(env).await else { continue };
            let failure = match &e {
                TellError::Unreachable { error, .. } => RemoteMailboxError::from_remote(error.clone()),
                e => {
                    tracing::warn!(actor = ?self.rref, error = %e, "message not sent");
                    RemoteMailboxError::Message(e.to_string())
                }
            };
            // Say why before the reply port (inside `e`) is dropped.
            if let Some(f) = failed {
                let _ = f.send(failure);
            }
            drop(e);
        }
    }
}
