//! [`RemoteRef<M>`]: a typed, serializable handle to an actor on any node,
//! and what its operations report.

use std::fmt;
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::error::RemoteError;
use super::inner::NodeInner;
use super::mailbox::{ActorExit, RemoteMessage};
use super::route::{Hops, Route};
use crate::auth::Token;
use crate::chan::{mpsc, oneshot};
use crate::NodeId;

/// The identity of an actor: its node and its id there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ActorId {
    /// The node the actor lives on.
    pub node: NodeId,
    /// Its id on that node (random, so it cannot be guessed).
    pub id: u64,
}

impl fmt::Display for ActorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{:016x}", self.node, self.id)
    }
}

/// A typed handle to an actor that may live on another node.
///
/// It serializes as the actor's identity, so it can travel inside any
/// message; received on another node it is live there too. A node with no
/// connection of its own to the owner reaches the actor back along the
/// nodes the ref came through (up to 16), which need not hold it any more.
/// Two refs to the same actor compare equal and hash alike wherever they
/// came from.
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
    /// The request could not be sent (too large, or does not encode); the
    /// request itself was dropped with the ask.
    #[error("request not sent: {0}")]
    Send(mpsc::SendError<()>),
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
    /// A ref to `target` on `node`'s routes (shared with every other ref to
    /// it there), from an identity and capability learnt some other way (the
    /// cluster's registry).
    pub(crate) fn from_parts(node: &Arc<NodeInner>, target: ActorId, token: Token) -> RemoteRef<M> {
        RemoteRef { route: node.route::<M>(target, token, Hops::default()) }
    }

    pub(crate) fn token(&self) -> Token {
        self.route.token
    }

    /// Waits until the route to the actor is open (at once if it is): after
    /// this, `try_tell` finds room unless the actor's window is full.
    pub(crate) async fn open(&self) -> Result<(), RemoteError> {
        if self.route.local.is_some() {
            return Ok(());
        }
        self.route.sender().await.map(drop)
    }

    /// Tells if there is room now, never waiting, and never spoiling the
    /// message: one without room comes back intact (`Full`), or, if it
    /// carries channel ends (moved into its encoding), is kept encoded, to
    /// be sent with [`Held::send`](mpsc::Held::send). A route not open yet
    /// is `Full`.
    pub(crate) fn try_tell_holding(&self, msg: M) -> Result<mpsc::Tried<M>, TellError<M>> {
        if self.route.lock_outbox().busy() {
            // Posted messages wait for room before it.
            return Ok(mpsc::Tried::Full(msg));
        }
        self.try_now_holding(msg)
    }

    /// [`try_tell_holding`](Self::try_tell_holding) without looking at the
    /// outbox (whose lock the caller may hold).
    pub(crate) fn try_now_holding(&self, msg: M) -> Result<mpsc::Tried<M>, TellError<M>> {
        if let Some(local) = &self.route.local {
            return match local.try_deliver(msg) {
                Ok(res) => res
                    .map(|()| mpsc::Tried::Sent)
                    .map_err(|msg| TellError::Unreachable { msg, error: RemoteError::Stopped }),
                Err((msg, _)) => Ok(mpsc::Tried::Full(msg)),
            };
        }
        let ready = self.route.ready.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let Some(sender) = ready else { return Ok(mpsc::Tried::Full(msg)) };
        match sender.try_send_holding(msg) {
            Ok(tried) => Ok(tried),
            Err(mpsc::SendError::Closed(m)) => Err(TellError::Unreachable { msg: m, error: self.lost() }),
            Err(e) => Err(TellError::Send(e)),
        }
    }

    /// Why the route's channel, found closed, will not open again: the
    /// actor's node cannot be reached, or the actor stopped (the channel
    /// was on the connection its node still has). `None` if the channel was
    /// on a connection that has since been replaced: opened again, it may
    /// well work.
    pub(crate) fn closed_for_good(&self) -> Option<RemoteError> {
        let Some(node) = self.route.node.upgrade() else { return Some(RemoteError::NodeGone) };
        let peer = match node.peer(self.route.target.node) {
            Ok(peer) => peer,
            Err(e) => return Some(e),
        };
        let ready = self.route.ready.lock().unwrap_or_else(|e| e.into_inner()).clone();
        match ready {
            Some(sender) if sender.is_on(&peer.conn) => Some(RemoteError::Stopped),
            _ => None,
        }
    }

    /// Whether no send can pass: the owner refused the ref's token.
    pub(crate) fn is_refused(&self) -> bool {
        self.route.forbidden.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Bytes sent to the actor that its node has not yet taken in (queued
    /// here, or in flight without a credit grant back): how far behind the
    /// actor is with this node's messages, as its node reports through flow
    /// control. `None` before the route opens; 0 for a local actor.
    pub(crate) fn backlog(&self) -> Option<u64> {
        if self.route.local.is_some() {
            return Some(0);
        }
        let ready = self.route.ready.lock().unwrap_or_else(|e| e.into_inner());
        ready.as_ref().and_then(|s| s.backlog())
    }

    /// The actor's identity.
    pub fn id(&self) -> ActorId {
        self.route.target
    }

    /// Sends a message, waiting while the actor's window is full, and
    /// behind what this node queued for the actor before it.
    ///
    /// Dropped before it returns (a timeout, a lost `select!`), the message
    /// is not sent, unless it was already being handed to the connection.
    pub async fn tell(&self, msg: M) -> Result<(), TellError<M>> {
        // Behind messages queued before it: it joins the queue, so a stream
        // of posts from other senders cannot keep it waiting.
        let msg = match self.tell_queued(msg).await {
            Ok(told) => return told,
            Err(msg) => msg,
        };
        let sent = self.tell_unless(msg, std::future::pending()).await?;
        debug_assert!(sent.is_none(), "never cancelled");
        Ok(())
    }

    /// [`tell`](Self::tell), encoding the message in this future's own polls
    /// (never in the outbox's pump task, where a `tell` behind queued
    /// messages is encoded): for senders whose encoding reads task-local
    /// state, as tether-ractor's `call` does. It waits until what was queued
    /// before it has been sent, then waits for room like any sender.
    pub async fn tell_in_place(&self, msg: M) -> Result<(), TellError<M>> {
        let sent = self.tell_unless(msg, std::future::pending()).await?;
        debug_assert!(sent.is_none(), "never cancelled");
        Ok(())
    }

    /// [`tell`](Self::tell), unless `cancel` resolves while the tell waits
    /// (behind posted messages, for the route to open, or for room): then
    /// nothing was sent and the message comes back, `Ok(Some(msg))`.
    /// `cancel` is polled only once the tell has to wait.
    pub(crate) async fn tell_unless(
        &self,
        msg: M,
        cancel: impl Future<Output = ()>,
    ) -> Result<Option<M>, TellError<M>> {
        let mut cancel = std::pin::pin!(cancel);
        // Behind what was queued before it, to keep the sender's order. (The
        // common case, nothing queued, costs one uncontended lock.)
        let (before, mut finished) = {
            let outbox = self.route.lock_outbox();
            (outbox.queued(), outbox.finished())
        };
        while finished < before {
            let progress = self.route.progress.notified();
            let mut progress = std::pin::pin!(progress);
            progress.as_mut().enable();
            finished = self.route.lock_outbox().finished();
            if finished >= before {
                break;
            }
            tokio::select! {
                biased;
                () = progress => {}
                () = cancel.as_mut() => return Ok(Some(msg)),
            }
        }
        self.deliver_unless(msg, cancel).await
    }

    /// Hands a message to the route's channel (opening it if needed),
    /// waiting for room, regardless of the outbox: the outbox's pump sends
    /// with it.
    pub(crate) async fn deliver(&self, msg: M) -> Result<(), TellError<M>> {
        let sent = self.deliver_unless(msg, std::future::pending()).await?;
        debug_assert!(sent.is_none(), "never cancelled");
        Ok(())
    }

    async fn deliver_unless(&self, msg: M, cancel: impl Future<Output = ()>) -> Result<Option<M>, TellError<M>> {
        let mut cancel = std::pin::pin!(cancel);
        // Room now on an open route: sent without awaiting anything.
        let mut msg = match self.route.local {
            Some(_) => msg,
            None => match self.try_now_holding(msg) {
                Ok(mpsc::Tried::Sent) => return Ok(None),
                Ok(mpsc::Tried::Full(msg)) => msg,
                // Its ends are in its encoding: it waits for room as it is.
                Ok(mpsc::Tried::Held(held)) => {
                    return held.send().await.map(|()| None).map_err(|e| match e {
                        mpsc::SendError::Closed(msg) => TellError::Unreachable { msg, error: self.lost() },
                        e => TellError::Send(e),
                    })
                }
                // Closed: opened again below, or told why not.
                Err(TellError::Unreachable { msg, .. }) => msg,
                Err(e) => return Err(e),
            },
        };
        if let Some(local) = &self.route.local {
            loop {
                match local.try_deliver(msg) {
                    Ok(res) => {
                        return res
                            .map(|()| None)
                            .map_err(|msg| TellError::Unreachable { msg, error: RemoteError::Stopped })
                    }
                    Err((back, handled)) => {
                        tokio::select! {
                            biased;
                            () = handled => msg = back,
                            () = cancel.as_mut() => return Ok(Some(back)),
                        }
                    }
                }
            }
        }
        // One retry: a route whose connection ended is opened again.
        for attempt in 0..2 {
            let sender = tokio::select! {
                biased;
                sender = self.route.sender() => sender,
                () = cancel.as_mut() => return Ok(Some(msg)),
            };
            let sender = match sender {
                Ok(s) => s,
                Err(error) => return Err(TellError::Unreachable { msg, error }),
            };
            match sender.send_unless(msg, cancel.as_mut()).await {
                Ok(back) => return Ok(back),
                Err(mpsc::SendError::Closed(m)) if attempt == 0 => msg = m,
                Err(mpsc::SendError::Closed(m)) => return Err(TellError::Unreachable { msg: m, error: self.lost() }),
                Err(e) => return Err(TellError::Send(e)),
            }
        }
        unreachable!("the loop returns")
    }

    /// Sends a message if there is room now; never waits.
    ///
    /// On a ref whose route is still being opened (one just received in a
    /// message, say), up to 256 messages are queued until it is open, so
    /// the first sends on a fresh ref do not fail. `Full` means the actor's
    /// window is full, or messages posted earlier
    /// ([`post`](Self::post)) still wait for room.
    pub fn try_tell(&self, msg: M) -> Result<(), TellError<M>> {
        let msg = match self.try_queue(msg) {
            std::ops::ControlFlow::Break(done) => return done,
            std::ops::ControlFlow::Continue(msg) => msg,
        };
        if let Some(local) = &self.route.local {
            return match local.try_deliver(msg) {
                Ok(res) => res.map_err(|msg| TellError::Unreachable { msg, error: RemoteError::Stopped }),
                Err((msg, _)) => Err(TellError::Full(msg)),
            };
        }
        let ready = self.route.ready.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let Some(sender) = ready else {
            // Closed again since `try_queue` looked: the next send reopens it.
            return Err(TellError::Full(msg));
        };
        match sender.try_send(msg) {
            Ok(()) => Ok(()),
            Err(mpsc::SendError::Full(m)) => Err(TellError::Full(m)),
            // Closed for good, or on a connection since replaced: then queued
            // while the route opens again.
            Err(mpsc::SendError::Closed(m)) => match self.closed_for_good() {
                Some(error) => Err(TellError::Unreachable { msg: m, error }),
                None => self.queue_opening(self.route.lock_outbox(), m),
            },
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
        let _permit = self.ask_permit()?;
        let (tx, rx) = oneshot::channel();
        let msg = make(ReplyPort(tx));
        let exchange = async {
            self.request(msg).await?;
            rx.await.map_err(|e| match e {
                oneshot::RecvError::Dropped => AskError::NoReply,
                other => AskError::Reply(other),
            })
        };
        tokio::time::timeout(timeout, exchange).await.map_err(|_| AskError::Timeout(timeout))?
    }

    /// Watches the actor: resolves once with why it can no longer be
    /// reached (see [`WatchEvent`]). The watch is placed by this call when
    /// the actor is local or its node connected (else when the monitor is
    /// first polled), so a monitor awaited later still hears how the actor
    /// ended. One that reaches the actor's node after the actor ended
    /// reports `Stopped` without a reason, as how it ended is not kept.
    pub fn monitor(&self) -> Monitor {
        Monitor::of(&self.route.node, self.route.target, self.route.token, self.route.hops.clone())
    }

    /// Counts one ask against the limit of asks waiting on the actor's node
    /// ([`Config::max_pending_asks`](crate::Config::max_pending_asks)) until
    /// the permit is dropped. [`RemoteRef::ask`] takes one itself; adapters
    /// that carry replies by other means take one per request the same way.
    pub fn ask_permit(&self) -> Result<AskPermit, AskError> {
        match (&self.route.local, self.route.node.upgrade()) {
            (Some(_), _) => Ok(AskPermit(None)),
            (None, Some(node)) => node.ask_permit(self.route.target.node).map(|p| AskPermit(Some(p))),
            (None, None) => Err(AskError::Unreachable(RemoteError::NodeGone)),
        }
    }

    pub(crate) fn lost(&self) -> RemoteError {
        match self.route.node.upgrade() {
            Some(node) => node.why_closed(self.route.target.node),
            None => RemoteError::NodeGone,
        }
    }
}

/// What a monitor reports: why the actor can no longer be reached.
///
/// The text in `Stopped` and `Failed` is what the actor's framework gave,
/// cut to at most 1024 bytes (at a character boundary): it comes from the
/// actor's node, which may be any peer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum WatchEvent {
    /// The actor stopped: by itself, or asked to (ractor's
    /// `stop(Some(reason))` gives the reason). `reason` is `None` when none
    /// was given, when the framework cannot tell (actix), and when the
    /// actor was already gone when the watch reached its node.
    Stopped {
        /// Why, if known.
        #[serde(deserialize_with = "super::mailbox::bounded_opt")]
        reason: Option<String>,
    },
    /// The actor failed: a handler returned an error or panicked (ractor's
    /// `ActorFailed`).
    Failed {
        /// The error or panic message.
        #[serde(deserialize_with = "super::mailbox::bounded")]
        error: String,
    },
    /// The actor's node cannot be reached (crashed, or the link is gone).
    NodeLost,
    /// The actor's node shut down and said goodbye.
    NodeLeft,
    /// The actor's node restarted: it has a new identity, and the actor is
    /// gone with the old one.
    NodeRestarted,
    /// The ref is not a capability for the actor (its token is forged), so
    /// its owner refuses to say anything about it.
    Forbidden,
}

impl WatchEvent {
    /// `Stopped` without a reason: the actor is gone, and nobody said why.
    pub(crate) const GONE: WatchEvent = WatchEvent::Stopped { reason: None };

    /// Whether the actor itself ended (`Stopped` or `Failed`), rather than
    /// its node becoming unreachable.
    pub fn is_actor_exit(&self) -> bool {
        matches!(self, WatchEvent::Stopped { .. } | WatchEvent::Failed { .. })
    }
}

impl From<ActorExit> for WatchEvent {
    fn from(exit: ActorExit) -> Self {
        match exit {
            ActorExit::Stopped { reason } => WatchEvent::Stopped { reason },
            ActorExit::Failed { error } => WatchEvent::Failed { error },
        }
    }
}

impl fmt::Display for WatchEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WatchEvent::Stopped { reason: None } => f.write_str("the actor stopped"),
            WatchEvent::Stopped { reason: Some(r) } => write!(f, "the actor stopped: {r}"),
            WatchEvent::Failed { error } => write!(f, "the actor failed: {error}"),
            WatchEvent::NodeLost => f.write_str("the actor's node was lost"),
            WatchEvent::NodeLeft => f.write_str("the actor's node left"),
            WatchEvent::NodeRestarted => f.write_str("the actor's node restarted"),
            WatchEvent::Forbidden => f.write_str("the ref is not a capability for the actor"),
        }
    }
}

/// A pending watch; await it for the [`WatchEvent`].
pub struct Monitor(Pin<Box<dyn Future<Output = WatchEvent> + Send>>);

impl Monitor {
    /// A watch of `target` on `node`'s peers.
    pub(crate) fn of(node: &std::sync::Weak<NodeInner>, target: ActorId, token: Token, hops: Hops) -> Monitor {
        match node.upgrade() {
            Some(node) => Monitor(node.watch(target, token, hops)),
            None => Monitor(Box::pin(std::future::ready(WatchEvent::NodeLost))),
        }
    }
}

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

/// A ref on the wire: the actor, its capability token, and the nodes
/// through which the sender reaches the owner (empty if the sender is the
/// owner or got the ref from it).
#[derive(Serialize, Deserialize)]
pub(crate) struct RefWire {
    pub(crate) node: NodeId,
    pub(crate) actor: u64,
    pub(crate) token: Token,
    pub(crate) hops: Hops,
}

impl RefWire {
    /// Decodes a ref on the node decoding it: that node, the actor, its
    /// token, and the hops back towards its owner.
    pub(crate) fn decode<'de, D: Deserializer<'de>>(d: D) -> Result<(Arc<NodeInner>, ActorId, Token, Hops), D::Error> {
        let wire = RefWire::deserialize(d)?;
        let (node, via) = crate::chan::decoding_owner()
            .and_then(|(owner, via)| owner.downcast::<NodeInner>().ok().map(|node| (node, via)))
            .ok_or_else(|| crate::codec::de_error::<D::Error>("remote refs travel only between tether nodes"))?;
        let hops = if via == wire.node { Hops::default() } else { Hops::received(via, wire.hops) };
        Ok((node, ActorId { node: wire.node, id: wire.actor }, wire.token, hops))
    }
}

impl<M: RemoteMessage> Serialize for RemoteRef<M> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let target = self.route.target;
        let hops = self.route.hops.clone();
        RefWire { node: target.node, actor: target.id, token: self.route.token, hops }.serialize(s)
    }
}

impl<'de, M: RemoteMessage> Deserialize<'de> for RemoteRef<M> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (node, target, token, hops) = RefWire::decode(d)?;
        Ok(RemoteRef { route: node.route::<M>(target, token, hops) })
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

    /// Resolves once the asker is gone: it dropped its ask (gave up, or its
    /// timeout passed), or the connection to its node ended. The asker's
    /// node tells at once (a frame of its own, not one batched for later),
    /// so a handler hears it about half a round trip after the drop.
    ///
    /// A handler doing long work races it against this and stops when the
    /// answer is no longer wanted:
    ///
    /// ```
    /// # async fn work() -> u64 { 42 }
    /// async fn handle(reply: tether::ReplyPort<u64>) {
    ///     tokio::select! {
    ///         answer = work() => drop(reply.send(answer)),
    ///         () = reply.cancelled() => {} // nobody waits: `work` is dropped
    ///     }
    /// }
    /// ```
    pub async fn cancelled(&self) {
        self.0.closed().await
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

/// One ask counted against the limit of asks waiting on a node; see
/// [`RemoteRef::ask_permit`]. Dropping it gives the place back.
#[derive(Debug)]
pub struct AskPermit(#[allow(dead_code)] Option<tokio::sync::OwnedSemaphorePermit>);
