//! How messages reach a local actor: the [`Mailbox`] a framework adapter
//! implements, how it says the actor ended ([`ActorExit`]), and the pacing
//! that lets a slow actor push back on its senders (see
//! [`Mailbox::deliver_tracked`]).

use std::fmt;
use std::sync::Arc;

use futures::future::{BoxFuture, FutureExt, Shared};
use serde::de::{DeserializeOwned, Deserializer, Visitor};
use serde::{Deserialize, Serialize};

use super::registry::Delivery;
use crate::chan::mpsc;

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

    /// How the actor ended: asked once [`stopped`](Self::stopped) has
    /// resolved, and awaited before the actor's watchers are told, so it must
    /// resolve soon after. The text in it is cut to 1024 bytes (at a
    /// character boundary) before anyone sees it.
    ///
    /// The default, for a framework that cannot tell, is
    /// `ActorExit::Stopped { reason: None }`.
    fn exit(&self) -> BoxFuture<'static, ActorExit> {
        Box::pin(std::future::ready(ActorExit::Stopped { reason: None }))
    }
}

/// How a local actor ended, as its framework adapter tells the node
/// ([`Mailbox::exit`]); its watchers see it as
/// [`WatchEvent::Stopped`](crate::WatchEvent::Stopped) or
/// [`WatchEvent::Failed`](crate::WatchEvent::Failed), on any node.
///
/// The text travels to remote watchers, so it is bounded: at most 1024
/// bytes of UTF-8, longer text cut at a character boundary, when the actor
/// ends and again when a peer's answer is decoded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ActorExit {
    /// The actor stopped by itself or was asked to, with the reason its
    /// framework gives (ractor's `stop(Some(reason))`; `None` if none was
    /// given or the framework cannot tell).
    Stopped {
        /// Why, if the framework says.
        #[serde(deserialize_with = "bounded_opt")]
        reason: Option<String>,
    },
    /// The actor failed: a handler returned an error or panicked, and this
    /// is its text.
    Failed {
        /// The error or panic message.
        #[serde(deserialize_with = "bounded")]
        error: String,
    },
}

impl ActorExit {
    /// The same, its text cut to [`MAX_EXIT_TEXT`].
    pub(crate) fn bounded(self) -> ActorExit {
        match self {
            ActorExit::Stopped { reason } => ActorExit::Stopped { reason: reason.map(cut) },
            ActorExit::Failed { error } => ActorExit::Failed { error: cut(error) },
        }
    }
}

/// The most bytes of text an [`ActorExit`] (and so a watch event) carries.
pub(crate) const MAX_EXIT_TEXT: usize = 1024;

/// `s`, cut to at most [`MAX_EXIT_TEXT`] bytes at a character boundary.
pub(crate) fn cut(mut s: String) -> String {
    if s.len() > MAX_EXIT_TEXT {
        s.truncate(floor_boundary(&s, MAX_EXIT_TEXT));
    }
    s
}

/// The largest char boundary of `s` not above `max`.
fn floor_boundary(s: &str, max: usize) -> usize {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    end
}

/// Decodes text keeping at most [`MAX_EXIT_TEXT`] bytes of it: a decoder
/// that lends its input (postcard, MessagePack from a slice) allocates no
/// more than that, whatever length the peer claims.
struct BoundedText;

impl<'de> Visitor<'de> for BoundedText {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v[..floor_boundary(v, MAX_EXIT_TEXT)].to_owned())
    }

    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<String, E> {
        Ok(cut(v))
    }
}

/// `String`, decoded through [`BoundedText`].
pub(crate) fn bounded<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    d.deserialize_str(BoundedText)
}

/// `Option<String>`, decoded through [`BoundedText`].
pub(crate) fn bounded_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    struct Text(String);
    impl<'de> Deserialize<'de> for Text {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            bounded(d).map(Text)
        }
    }
    Option::<Text>::deserialize(d).map(|t| t.map(|t| t.0))
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
pub(crate) type Handled = Shared<BoxFuture<'static, ()>>;

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
    pub(crate) fn try_deliver(&self, msg: M) -> Result<Result<(), M>, (M, Handled)> {
        let mut t = self.track();
        match t.wait_before(0) {
            Some(wait) => Err((msg, wait)),
            None => Ok(t.deliver(&*self.mailbox, msg, 0)),
        }
    }
}

/// Hands one route's messages to a local actor, in order, paced by a
/// [`Tracker`]: while the actor has not handled the last tracked message,
/// the pump reads no more, so the route's window fills and pushes back on
/// the senders. Ends when the route closes, when the actor refuses a
/// message, or when `actor_stopped` aborts it.
///
/// The route's span is the parent of what the pump logs, but not current
/// while it delivers: a framework that carries the current span into the
/// handler (ractor) would make every handler on the route part of one trace
/// as long as the route. With `delivery.trace` (this node's propagation,
/// and the actor's id), a message that carries a trace context is
/// delivered inside a span that continues the sender's trace.
pub(crate) async fn pump<M: RemoteMessage>(mut rx: mpsc::Receiver<M>, mb: Arc<dyn Mailbox<M>>, delivery: Delivery) {
    let Delivery { span, trace } = delivery;
    let mut tracker = Tracker::default();
    loop {
        let msg = match rx.recv().await {
            Ok(Some(msg)) => msg,
            Ok(None) | Err(crate::RecvError::Connection(_)) => break,
            Err(e) => {
                tracing::warn!(parent: &span, error = %e, "message for a local actor dropped");
                continue;
            }
        };
        let len = rx.last_len();
        if let Some(handled) = tracker.wait_before(len) {
            handled.await;
        }
        let delivered = match (&trace, rx.take_trace().filter(|parent| parent.is_valid())) {
            (Some((propagation, actor)), Some(parent)) => {
                propagation.receive_span(&parent, *actor).in_scope(|| tracker.deliver(&*mb, msg, len))
            }
            _ => tracker.deliver(&*mb, msg, len),
        };
        if delivered.is_err() {
            // The actor stopped: this message, and any behind it, are
            // counted as unread (`ConnectionStats::unread`) as they go.
            tracing::debug!(parent: &span, "actor stopped: route closes, the message in hand is dropped");
            rx.count_unread();
            break;
        }
    }
}
