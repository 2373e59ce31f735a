//! `RemoteRef<M>`: a typed, serializable handle to an actor on any node.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures::future::{BoxFuture, FutureExt, Shared};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::auth::Token;
use crate::chan::{mpsc, oneshot};
use crate::node::{NodeInner, RemoteError};
use crate::NodeId;

/// Messages that can be sent to remote actors: anything serde can carry,
/// including refs, channel ends and reply ports.
pub trait RemoteMessage: Serialize + DeserializeOwned + Send + 'static {}

impl<T: Serialize + DeserializeOwned + Send + 'static> RemoteMessage for T {}

/// How a framework adapter hands messages to a local actor.
pub trait Mailbox<M>: Send + Sync + 'static {
    /// Delivers `msg` to the actor; gives it back if the actor is gone.
    fn deliver(&self, msg: M) -> Result<(), M>;

    /// Delivers `msg` like [`deliver`](Self::deliver), and returns a future
    /// that resolves once the actor is done with it (handled it, or stopped).
    /// The future must not need to be polled for the message to be handled:
    /// the node may drop it.
    ///
    /// This is how a slow actor pushes back on its senders. The node delivers
    /// every 256th message of a route through this method (sooner once the
    /// encodings since the last add up to 256 KiB), and delivers the next
    /// tracked one only once the previous one is done. So fewer than 512 of a
    /// route's messages (and about 512 KiB, plus one message) wait in the
    /// actor's mailbox; meanwhile the node reads no more from the route, its
    /// window fills, and the senders wait (or get `Full`). Sends from this
    /// node to the actor are paced the same way.
    ///
    /// Two consequences. A handler that waits for a message sent more than
    /// 255 messages after its own on the same route waits forever. And a
    /// route waiting here holds up to `Config::port_window` of its
    /// connection's window: once `conn_window / port_window` routes (8 by
    /// default) of one connection are full at once, its other ports stall
    /// too, until an actor catches up.
    ///
    /// The default returns `None`: the framework cannot tell when a message
    /// was handled, and messages go into the actor's mailbox as they arrive.
    fn deliver_tracked(&self, msg: M) -> Result<Option<BoxFuture<'static, ()>>, M> {
        self.deliver(msg).map(|()| None)
    }

    /// Resolves once the actor has stopped.
    fn stopped(&self) -> BoxFuture<'static, ()>;
}

/// The node tracks one of a route's messages every `TRACK_EVERY` (see
/// [`Mailbox::deliver_tracked`]), or sooner once `TRACK_BYTES` of
/// encodings went by since the last.
const TRACK_EVERY: u32 = 256;
const TRACK_BYTES: usize = 256 * 1024;

/// Paces the deliveries of one route to an actor's mailbox: every so often
/// a message is delivered tracked, and the next tracked one only once the
/// previous was handled (see [`Mailbox::deliver_tracked`]).
#[derive(Default)]
pub(crate) struct Tracker {
    count: u32,
    bytes: usize,
    handled: Option<Handled>,
}

/// Resolves once a tracked message is handled; shared by those waiting.
type Handled = Shared<BoxFuture<'static, ()>>;

impl Tracker {
    /// Whether the next message, of `len` encoded bytes, is to be tracked.
    fn next_is_due(&self, len: usize) -> bool {
        self.count.saturating_add(1) >= TRACK_EVERY || self.bytes.saturating_add(len) >= TRACK_BYTES
    }

    /// What must be handled before the next message, of `len` encoded
    /// bytes, may be delivered: the previous tracked one, if that is due and
    /// the actor has not handled it yet.
    pub(crate) fn wait_before(&mut self, len: usize) -> Option<Handled> {
        if !self.next_is_due(len) {
            return None;
        }
        let h = self.handled.as_ref()?;
        if h.clone().now_or_never().is_some() {
            self.handled = None;
            return None;
        }
        Some(h.clone())
    }

    /// Delivers `msg` (of `len` encoded bytes), tracked if it is due; the
    /// caller has waited for [`wait_before`](Self::wait_before) first.
    pub(crate) fn deliver<M: 'static>(&mut self, mb: &dyn Mailbox<M>, msg: M, len: usize) -> Result<(), M> {
        if !self.next_is_due(len) {
            mb.deliver(msg)?;
        } else if let Some(handled) = mb.deliver_tracked(msg)? {
            *self = Tracker { count: 0, bytes: 0, handled: Some(handled.shared()) };
            return Ok(());
        }
        // Untracked, or not trackable (an adapter that cannot tell, or not
        // this kind of message: the next one is tried instead). Saturating:
        // with an adapter that never tracks, the counts never reset.
        self.count = self.count.saturating_add(1);
        self.bytes = self.bytes.saturating_add(len);
        Ok(())
    }
}

/// An actor of this node, as its routes reach it.
pub(crate) struct Local<M> {
    mailbox: Arc<dyn Mailbox<M>>,
    /// Pacing for messages sent on this node (never encoded: counted only).
    track: std::sync::Mutex<Tracker>,
}

impl<M: 'static> Local<M> {
    pub(crate) fn new(mailbox: Arc<dyn Mailbox<M>>) -> Self {
        Local { mailbox, track: Default::default() }
    }

    fn track(&self) -> std::sync::MutexGuard<'_, Tracker> {
        self.track.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Delivers now, or gives the message back with what to wait for.
    fn try_deliver(&self, msg: M) -> Result<Result<(), M>, (M, Handled)> {
        let mut t = self.track();
        match t.wait_before(0) {
            Some(wait) => Err((msg, wait)),
            None => Ok(t.deliver(&*self.mailbox, msg, 0)),
        }
    }
}

/// The identity of an actor: its node and its id there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ActorId {
    /// The node the actor lives on.
    pub node: NodeId,
    /// Its id on that node (random, so it cannot be guessed).
    pub id: u64,
}

/// How messages reach one actor from this node. Shared by every copy of a
/// ref on this node, so a ref received many times costs one route.
pub(crate) struct Route<M> {
    pub(crate) node: Weak<NodeInner>,
    pub(crate) target: ActorId,
    /// The capability token the owner checks before opening a route.
    pub(crate) token: Token,
    /// The peer the ref came from, which can forward when we have no
    /// connection to the owner.
    pub(crate) via: Option<NodeId>,
    pub(crate) local: Option<Local<M>>,
    pub(crate) sender: tokio::sync::Mutex<Option<mpsc::Sender<M>>>,
    /// The opened sender, for `try_tell` and for `sender` without waiting on
    /// the async lock.
    pub(crate) ready: std::sync::Mutex<Option<mpsc::Sender<M>>>,
    /// Set once the owner refused the ref's token: no send will ever pass.
    pub(crate) forbidden: std::sync::atomic::AtomicBool,
}

impl<M> Drop for Route<M> {
    fn drop(&mut self) {
        if let Some(node) = self.node.upgrade() {
            node.forget_route(self.target, self.token);
        }
    }
}

impl<M: RemoteMessage> Route<M> {
    /// The sender to the actor's mailbox, opening it if needed.
    pub(crate) async fn sender(&self) -> Result<mpsc::Sender<M>, RemoteError> {
        if let Some(s) = self.ready.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            if !s.is_closed() {
                return Ok(s.clone());
            }
        }
        let mut slot = self.sender.lock().await;
        if let Some(s) = slot.as_ref() {
            if !s.is_closed() {
                return Ok(s.clone());
            }
        }
        if self.forbidden.load(std::sync::atomic::Ordering::Acquire) {
            return Err(RemoteError::Forbidden);
        }
        let node = self.node.upgrade().ok_or(RemoteError::NodeGone)?;
        let s = node.open_route::<M>(self.target, self.token, self.via).await.inspect_err(|e| {
            if *e == RemoteError::Forbidden {
                self.forbidden.store(true, std::sync::atomic::Ordering::Release);
            }
        })?;
        *slot = Some(s.clone());
        *self.ready.lock().unwrap_or_else(|e| e.into_inner()) = Some(s.clone());
        Ok(s)
    }
}

/// A typed handle to an actor that may live on another node.
///
/// It serializes as the actor's identity, so it can travel inside any
/// message; received on another node it is live there too, and a third node
/// reaches the actor through the node it got the ref from if it has no
/// connection of its own to the owner. Two refs to the same actor compare
/// equal and hash alike wherever they came from.
///
/// A ref is a capability: besides the actor's id it carries a token only
/// the owner node can mint, so holding a ref (sent by someone who had it, or
/// found by name with [`Node::lookup`](crate::Node::lookup)) is what grants
/// access. A ref built from a guessed id is refused with
/// [`RemoteError::Forbidden`] and compares unequal to the real one. `Debug`
/// shows the node and the id, never the token.
pub struct RemoteRef<M> {
    pub(crate) route: Arc<Route<M>>,
}

impl<M> Clone for RemoteRef<M> {
    fn clone(&self) -> Self {
        RemoteRef { route: self.route.clone() }
    }
}

impl<M> PartialEq for RemoteRef<M> {
    fn eq(&self, other: &Self) -> bool {
        self.route.target == other.route.target && self.route.token == other.route.token
    }
}

impl<M> Eq for RemoteRef<M> {}

impl<M> Hash for RemoteRef<M> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.route.target.hash(state)
    }
}

impl<M> fmt::Debug for RemoteRef<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RemoteRef(node {}, actor {:016x})", self.route.target.node, self.route.target.id)
    }
}

/// Why a tell failed; the message is handed back.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum TellError<M> {
    /// The actor's mailbox is full right now (`try_tell` only).
    #[error("mailbox full")]
    Full(M),
    /// The actor stopped, or its node cannot be reached.
    #[error("actor unreachable: {error}")]
    Unreachable {
        /// The message.
        msg: M,
        /// Why.
        error: RemoteError,
    },
    /// The message could not be sent (too large, or does not encode).
    #[error("message not sent: {0:?}")]
    Send(mpsc::SendError<M>),
}

impl<M> fmt::Debug for TellError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TellError::Full(_) => f.write_str("Full(..)"),
            TellError::Unreachable { error, .. } => write!(f, "Unreachable({error:?})"),
            TellError::Send(e) => write!(f, "Send({e:?})"),
        }
    }
}

impl<M> TellError<M> {
    /// The message that was not delivered.
    pub fn into_inner(self) -> M {
        match self {
            TellError::Full(m) | TellError::Unreachable { msg: m, .. } => m,
            TellError::Send(e) => e.into_inner(),
        }
    }
}

/// Why an ask failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AskError {
    /// No reply within the timeout.
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    /// The actor dropped the reply port without answering.
    #[error("the reply port was dropped without an answer")]
    NoReply,
    /// The request could not be delivered.
    #[error("request not delivered: {0}")]
    Unreachable(RemoteError),
    /// The request could not be sent (too large, or does not encode).
    #[error("request not sent: {0}")]
    Send(String),
    /// The reply does not decode, or its connection ended.
    #[error("reply lost: {0}")]
    Reply(oneshot::RecvError),
    /// This node already waits on `limit` asks to the actor's node
    /// ([`Config::max_pending_asks`](crate::Config::max_pending_asks)); the
    /// request was not sent.
    #[error("too many asks pending on the actor's node (limit {limit})")]
    TooManyPending {
        /// The limit.
        limit: u32,
    },
}

impl<M: RemoteMessage> RemoteRef<M> {
    /// The actor's identity.
    pub fn id(&self) -> ActorId {
        self.route.target
    }

    /// Sends a message, waiting while the actor's window is full.
    pub async fn tell(&self, msg: M) -> Result<(), TellError<M>> {
        let mut msg = msg;
        if let Some(local) = &self.route.local {
            loop {
                match local.try_deliver(msg) {
                    Ok(res) => return res.map_err(|msg| TellError::Unreachable { msg, error: RemoteError::Stopped }),
                    Err((back, handled)) => {
                        msg = back;
                        handled.await;
                    }
                }
            }
        }
        // One retry: a route whose connection ended is opened again.
        for attempt in 0..2 {
            let sender = match self.route.sender().await {
                Ok(s) => s,
                Err(error) => return Err(TellError::Unreachable { msg, error }),
            };
            match sender.send(msg).await {
                Ok(()) => return Ok(()),
                Err(mpsc::SendError::Closed(m)) if attempt == 0 => msg = m,
                Err(mpsc::SendError::Closed(m)) => return Err(TellError::Unreachable { msg: m, error: self.lost() }),
                Err(e) => return Err(TellError::Send(e)),
            }
        }
        unreachable!("the loop returns")
    }

    /// Sends a message if there is room now; never waits.
    pub fn try_tell(&self, msg: M) -> Result<(), TellError<M>> {
        if let Some(local) = &self.route.local {
            return match local.try_deliver(msg) {
                Ok(res) => res.map_err(|msg| TellError::Unreachable { msg, error: RemoteError::Stopped }),
                Err((msg, _)) => Err(TellError::Full(msg)),
            };
        }
        let ready = self.route.ready.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let Some(sender) = ready else {
            if self.route.forbidden.load(std::sync::atomic::Ordering::Acquire) {
                return Err(TellError::Unreachable { msg, error: RemoteError::Forbidden });
            }
            // Not opened yet: nothing can be queued without waiting.
            return Err(TellError::Full(msg));
        };
        match sender.try_send(msg) {
            Ok(()) => Ok(()),
            Err(mpsc::SendError::Full(m)) => Err(TellError::Full(m)),
            Err(mpsc::SendError::Closed(m)) => Err(TellError::Unreachable { msg: m, error: self.lost() }),
            Err(e) => Err(TellError::Send(e)),
        }
    }

    /// Sends the message `make` builds around a fresh reply port and waits
    /// for the answer, at most `timeout`. Dropping the returned future drops
    /// the reply port's receiver: the actor sees [`ReplyPort::is_closed`],
    /// and a request still queued on the owner's node is not delivered.
    ///
    /// At most [`Config::max_pending_asks`](crate::Config::max_pending_asks)
    /// asks wait on one remote node at once; beyond that `ask` fails at once
    /// with [`AskError::TooManyPending`].
    pub async fn ask<R: RemoteMessage>(
        &self,
        make: impl FnOnce(ReplyPort<R>) -> M,
        timeout: Duration,
    ) -> Result<R, AskError> {
        let _permit = self.__ask_permit()?;
        let (tx, rx) = oneshot::channel();
        let msg = make(ReplyPort(tx));
        let exchange = async {
            self.tell(msg).await.map_err(|e| match e {
                TellError::Unreachable { error, .. } => AskError::Unreachable(error),
                other => AskError::Send(other.to_string()),
            })?;
            rx.await.map_err(|e| match e {
                oneshot::RecvError::Dropped => AskError::NoReply,
                other => AskError::Reply(other),
            })
        };
        tokio::time::timeout(timeout, exchange).await.map_err(|_| AskError::Timeout(timeout))?
    }

    /// Watches the actor: resolves once with why it can no longer be
    /// reached.
    pub fn monitor(&self) -> Monitor {
        let node = self.route.node.upgrade();
        let (target, token, via) = (self.route.target, self.route.token, self.route.via);
        Monitor(Box::pin(async move {
            match node {
                Some(node) => node.watch(target, token, via).await,
                None => WatchEvent::NodeLost,
            }
        }))
    }

    /// Counts one ask against the actor's node's limit until dropped. For
    /// adapters that carry replies by other means than [`RemoteRef::ask`].
    #[doc(hidden)]
    pub fn __ask_permit(&self) -> Result<Option<impl Send + Sync + 'static>, AskError> {
        match (&self.route.local, self.route.node.upgrade()) {
            (Some(_), _) => Ok(None),
            (None, Some(node)) => node.ask_permit(self.route.target.node).map(Some),
            (None, None) => Err(AskError::Unreachable(RemoteError::NodeGone)),
        }
    }

    fn lost(&self) -> RemoteError {
        match self.route.node.upgrade() {
            Some(node) => node.why_closed(self.route.target.node),
            None => RemoteError::NodeGone,
        }
    }
}

/// What a monitor reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum WatchEvent {
    /// The actor stopped.
    Stopped,
    /// The actor's node cannot be reached (crashed, or the link is gone).
    NodeLost,
    /// The actor's node restarted: it has a new identity, and the actor is
    /// gone with the old one.
    NodeRestarted,
    /// The ref is not a capability for the actor (its token is forged), so
    /// its owner refuses to say anything about it.
    Forbidden,
}

/// A pending watch; await it for the [`WatchEvent`].
pub struct Monitor(Pin<Box<dyn Future<Output = WatchEvent> + Send>>);

impl Future for Monitor {
    type Output = WatchEvent;
    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<WatchEvent> {
        self.0.as_mut().poll(cx)
    }
}

impl fmt::Debug for Monitor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Monitor")
    }
}

#[derive(Serialize, Deserialize)]
struct RefWire {
    node: NodeId,
    actor: u64,
    token: Token,
}

impl<M: RemoteMessage> Serialize for RemoteRef<M> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let target = self.route.target;
        RefWire { node: target.node, actor: target.id, token: self.route.token }.serialize(s)
    }
}

impl<'de, M: RemoteMessage> Deserialize<'de> for RemoteRef<M> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let wire = RefWire::deserialize(d)?;
        let (node, via) = crate::chan::decoding_node()
            .ok_or_else(|| D::Error::custom("remote refs travel only between tether nodes"))?;
        let route = node.route::<M>(ActorId { node: wire.node, id: wire.actor }, wire.token, Some(via));
        Ok(RemoteRef { route })
    }
}

/// A serializable reply port: put it in a message where a local program
/// would use ractor's `RpcReplyPort`. Dropping it unanswered fails the
/// asker at once with [`AskError::NoReply`].
pub struct ReplyPort<R>(oneshot::Sender<R>);

impl<R: RemoteMessage> ReplyPort<R> {
    /// A reply port and the receiver its answer arrives on, for adapters and
    /// programs that build requests themselves.
    pub fn channel() -> (ReplyPort<R>, oneshot::Receiver<R>) {
        let (tx, rx) = oneshot::channel();
        (ReplyPort(tx), rx)
    }

    /// Answers the ask. Fails if the asker is gone (it gave up or timed out).
    pub fn send(self, reply: R) -> Result<(), R> {
        self.0.send(reply).map_err(|e| e.into_inner())
    }

    /// Whether the asker is gone, so the work is no longer wanted.
    pub fn is_closed(&self) -> bool {
        self.0.is_closed()
    }
}

impl<R> fmt::Debug for ReplyPort<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ReplyPort")
    }
}

impl<R: RemoteMessage> Serialize for ReplyPort<R> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de, R: RemoteMessage> Deserialize<'de> for ReplyPort<R> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        oneshot::Sender::deserialize(d).map(ReplyPort)
    }
}

/// Type-erased route kept in the node's table.
pub(crate) type AnyRoute = Weak<dyn Any + Send + Sync>;
