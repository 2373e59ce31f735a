//! A bounded multi-producer, single-consumer channel whose ends can be sent
//! to other nodes inside messages.
//!
//! Locally it is a tokio channel. Sending the [`Receiver`] to a peer moves
//! reading there; sending a [`Sender`] gives the peer a way to write here.
//! Either way the link is a port of the connection with its own credit
//! window: a sender that outruns the receiver waits in [`Sender::send`] (or
//! gets [`SendError::Full`] from [`Sender::try_send`]).

use std::fmt;
use std::future::poll_fn;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures::task::AtomicWaker;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub use super::RecvError;
use super::{attach_port, claim_port, defer, encode, spawn_splice, PortHandle, RemoteRecv, SendFailure};
use crate::codec::CodecError;
use crate::mux::OutMessage;
use crate::wire::End;

/// Creates a bounded channel holding up to `capacity` messages locally.
/// Across a connection the bound is the port's credit window instead.
pub fn channel<T: Send + 'static>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    let (tx, rx) = tokio::sync::mpsc::channel(capacity.max(1));
    let attach = Arc::new(Attach::default());
    (
        Sender { inner: SenderInner::Local { tx, attach: attach.clone() } },
        Receiver {
            inner: Mutex::new(Some(RecvInner::Local(LocalRecv {
                rx,
                attach,
                remotes: Vec::new(),
                waiting: Default::default(),
                taken: 0,
                next: 0,
                local_done: false,
                last_len: 0,
                last_trace: None,
                last_from: usize::MAX,
            }))),
        },
    )
}

/// Why a send failed. The message is handed back.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum SendError<T> {
    /// The receiver is gone, or the connection carrying the channel ended.
    #[error("channel closed")]
    Closed(T),
    /// [`Sender::try_send`] only: no room right now.
    #[error("channel full")]
    Full(T),
    /// The message's encoding exceeds the peer's `max_message` limit.
    #[error("message of {size} bytes exceeds the peer's max_message of {max}")]
    TooLarge {
        /// The message.
        value: T,
        /// Its encoded size.
        size: usize,
        /// The peer's limit.
        max: u32,
    },
    /// The message could not be encoded.
    #[error("message does not encode: {error}")]
    Encode {
        /// The message.
        value: T,
        /// What went wrong.
        error: CodecError,
    },
}

impl<T> SendError<T> {
    /// The message that was not sent.
    pub fn into_inner(self) -> T {
        match self {
            SendError::Closed(v) | SendError::Full(v) => v,
            SendError::TooLarge { value, .. } | SendError::Encode { value, .. } => value,
        }
    }

    /// The message, and this error without it.
    pub fn split(self) -> (T, SendError<()>) {
        match self {
            SendError::Closed(v) => (v, SendError::Closed(())),
            SendError::Full(v) => (v, SendError::Full(())),
            SendError::TooLarge { value, size, max } => (value, SendError::TooLarge { value: (), size, max }),
            SendError::Encode { value, error } => (value, SendError::Encode { value: (), error }),
        }
    }

    /// Whether no later send on this channel can succeed either.
    pub fn is_closed(&self) -> bool {
        matches!(self, SendError::Closed(_))
    }

    fn from_failure(f: SendFailure, value: T) -> Self {
        match f {
            SendFailure::Closed => SendError::Closed(value),
            SendFailure::Full => SendError::Full(value),
            SendFailure::TooLarge { size, max } => SendError::TooLarge { value, size, max },
        }
    }
}

impl SendError<()> {
    /// This error, handing back `value` as the message.
    pub fn with_value<T>(self, value: T) -> SendError<T> {
        match self {
            SendError::Closed(()) => SendError::Closed(value),
            SendError::Full(()) => SendError::Full(value),
            SendError::TooLarge { size, max, .. } => SendError::TooLarge { value, size, max },
            SendError::Encode { error, .. } => SendError::Encode { value, error },
        }
    }
}

impl<T> fmt::Debug for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Closed(_) => f.write_str("Closed(..)"),
            SendError::Full(_) => f.write_str("Full(..)"),
            SendError::TooLarge { size, max, .. } => write!(f, "TooLarge {{ size: {size}, max: {max} }}"),
            SendError::Encode { error, .. } => write!(f, "Encode({error:?})"),
        }
    }
}

/// Ports through which remote senders write into a local receiver.
#[derive(Default)]
struct Attach {
    list: Mutex<AttachList>,
    /// Set whenever `list.new` gains a port, so that the receiver looks at
    /// the list (and takes its lock) only then.
    fresh: std::sync::atomic::AtomicBool,
    waker: AtomicWaker,
    /// Messages local senders have put in the channel so far.
    sent: std::sync::atomic::AtomicU64,
}

#[derive(Default)]
struct AttachList {
    /// Each port, with how many local messages were sent before it was
    /// attached: a sender that sent here and then travelled must not have
    /// its new port read before what it sent here (a byte stream would
    /// come out of order, its end before its middle).
    new: Vec<(PortHandle, u64)>,
    receiver_gone: bool,
}

/// The sending half. Cloning makes another sender to the same receiver.
pub struct Sender<T> {
    inner: SenderInner<T>,
}

enum SenderInner<T> {
    Local { tx: tokio::sync::mpsc::Sender<T>, attach: Arc<Attach> },
    Remote(Arc<PortHandle>),
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        Sender {
            inner: match &self.inner {
                SenderInner::Local { tx, attach } => SenderInner::Local { tx: tx.clone(), attach: attach.clone() },
                SenderInner::Remote(p) => SenderInner::Remote(p.clone()),
            },
        }
    }
}

impl<T> fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner {
            SenderInner::Local { .. } => f.write_str("Sender(local)"),
            SenderInner::Remote(p) => write!(f, "Sender(peer {}, port {})", p.shared.peer_id, p.port),
        }
    }
}

impl<T: Serialize + Send + 'static> Sender<T> {
    pub(crate) fn from_port(port: PortHandle) -> Self {
        Sender { inner: SenderInner::Remote(Arc::new(port)) }
    }

    /// Sends a message, waiting while the channel is full. Fails with
    /// [`SendError::Closed`] once the receiver is gone.
    ///
    /// Cancel safety: if the future is dropped before it completes, the
    /// message was not sent.
    pub async fn send(&self, value: T) -> Result<(), SendError<T>> {
        match &self.inner {
            SenderInner::Local { tx, attach } => {
                tx.send(value).await.map_err(|e| SendError::Closed(e.0))?;
                attach.sent.fetch_add(1, std::sync::atomic::Ordering::Release);
                Ok(())
            }
            SenderInner::Remote(_) => match self.send_unless(value, std::future::pending()).await {
                Ok(sent) => {
                    debug_assert!(sent.is_none(), "never cancelled");
                    Ok(())
                }
                Err(e) => Err(e),
            },
        }
    }

    /// Sends like [`send`](Self::send), unless `cancel` resolves while the
    /// send waits for room: then nothing was sent, and the message comes
    /// back (`Ok(Some(value))`). `cancel` is first polled only once the
    /// channel is found full, and not at all for a message that carries
    /// channel ends: encoding moved them into the message, so it could not
    /// be sent again; it waits like [`send`](Self::send).
    pub(crate) async fn send_unless(
        &self,
        value: T,
        cancel: impl std::future::Future<Output = ()>,
    ) -> Result<Option<T>, SendError<T>> {
        let mut cancel = std::pin::pin!(cancel);
        match &self.inner {
            SenderInner::Local { tx, .. } => {
                tokio::select! {
                    biased;
                    reserved = tx.reserve() => match reserved {
                        Ok(permit) => {
                            permit.send(value);
                            Ok(None)
                        }
                        Err(_) => Err(SendError::Closed(value)),
                    },
                    () = cancel.as_mut() => Ok(Some(value)),
                }
            }
            SenderInner::Remote(port) => {
                let msg = match encode(&port.shared, &value) {
                    Ok(msg) => msg,
                    Err(error) => return Err(SendError::Encode { value, error }),
                };
                // Dropped with the message still in it (full, then
                // cancelled), it discards the message: nothing was queued.
                let mut pending = Unsent { port, msg: Some(msg) };
                let res = poll_fn(|cx| match port.poll_send(cx, &mut pending.msg) {
                    Poll::Pending if pending.msg.as_ref().is_some_and(|m| m.ports.is_empty()) => {
                        cancel.as_mut().poll(cx).map(|()| Err(None))
                    }
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(r) => Poll::Ready(r.map_err(Some)),
                })
                .await;
                match res {
                    Ok(()) => Ok(None),
                    Err(None) => Ok(Some(value)),
                    Err(Some(f)) => Err(SendError::from_failure(f, value)),
                }
            }
        }
    }

    /// Sends a message if there is room now; never waits.
    pub fn try_send(&self, value: T) -> Result<(), SendError<T>> {
        self.send_now(value, false)
    }

    /// Sends ignoring the send buffer (a one-shot's single message).
    pub(crate) fn send_now(&self, value: T, unbuffered: bool) -> Result<(), SendError<T>> {
        match &self.inner {
            SenderInner::Local { tx, attach } => {
                tx.try_send(value).map_err(|e| match e {
                    tokio::sync::mpsc::error::TrySendError::Full(v) => SendError::Full(v),
                    tokio::sync::mpsc::error::TrySendError::Closed(v) => SendError::Closed(v),
                })?;
                attach.sent.fetch_add(1, std::sync::atomic::Ordering::Release);
                Ok(())
            }
            SenderInner::Remote(port) => {
                let msg = match encode(&port.shared, &value) {
                    Ok(msg) => msg,
                    Err(error) => return Err(SendError::Encode { value, error }),
                };
                port.send_now(msg, unbuffered).map_err(|f| SendError::from_failure(f, value))
            }
        }
    }

    /// Resolves once the receiver is gone (sends would fail).
    pub async fn closed(&self) {
        match &self.inner {
            SenderInner::Local { tx, .. } => tx.closed().await,
            SenderInner::Remote(port) => poll_fn(|cx| port.poll_send_closed(cx)).await,
        }
    }

    /// Sends if there is room now, like [`try_send`](Self::try_send), but
    /// a message that finds no room is never spoilt: one that carries
    /// channel ends (moved into its encoding) is kept encoded, to be sent by
    /// [`Held::send`]; any other comes back intact.
    pub(crate) fn try_send_holding(&self, value: T) -> Result<Tried<T>, SendError<T>> {
        let SenderInner::Remote(port) = &self.inner else {
            return match self.send_now(value, false) {
                Ok(()) => Ok(Tried::Sent),
                Err(SendError::Full(value)) => Ok(Tried::Full(value)),
                Err(e) => Err(e),
            };
        };
        let msg = match encode(&port.shared, &value) {
            Ok(msg) => msg,
            Err(error) => return Err(SendError::Encode { value, error }),
        };
        match port.try_offer(msg) {
            Ok(()) => Ok(Tried::Sent),
            Err((SendFailure::Full, Some(msg))) if !msg.ports.is_empty() => {
                Ok(Tried::Held(Held { kept: Kept { port: port.clone(), msg: Some(msg) }, value }))
            }
            Err((failure, unsent)) => {
                // Nothing of it was queued, and it carries no ends.
                drop(Unsent { port, msg: unsent });
                match failure {
                    SendFailure::Full => Ok(Tried::Full(value)),
                    f => Err(SendError::from_failure(f, value)),
                }
            }
        }
    }

    /// Bytes queued here or sent without the receiver's node having granted
    /// their credit back (see `Mux::backlog`); `None` for a local channel or
    /// a closed one.
    pub(crate) fn backlog(&self) -> Option<u64> {
        match &self.inner {
            SenderInner::Local { .. } => None,
            SenderInner::Remote(port) => port.shared.lock().mux.backlog(port.port),
        }
    }

    /// Whether this sender writes to `conn` (a local one writes to none).
    pub(crate) fn is_on(&self, conn: &crate::Connection) -> bool {
        match &self.inner {
            SenderInner::Local { .. } => false,
            SenderInner::Remote(port) => Arc::ptr_eq(&port.shared, conn.shared()),
        }
    }

    /// `n` messages for this sender's remote reader were dropped unsent:
    /// counted with its connection's
    /// [`unread`](crate::ConnectionStats::unread).
    fn count_unread(&self, n: u64) {
        if let (SenderInner::Remote(port), 1..) = (&self.inner, n) {
            port.count_unread(n);
        }
    }

    /// Whether the receiver is gone.
    pub fn is_closed(&self) -> bool {
        match &self.inner {
            SenderInner::Local { tx, .. } => tx.is_closed(),
            SenderInner::Remote(port) => {
                let st = port.shared.lock();
                st.error.is_some() || st.mux.is_send_closed(port.port)
            }
        }
    }
}

/// A message encoded but not yet accepted by the mux: if the send is
/// cancelled, the ports it would have announced are released.
/// What [`Sender::try_send_holding`] did.
pub(crate) enum Tried<T> {
    Sent,
    /// No room now; the message, intact.
    Full(T),
    /// No room now, and the message carries channel ends: kept encoded.
    Held(Held<T>),
}

/// A message kept encoded (its channel ends moved into it), to be sent as
/// it is once there is room. Dropped unsent, it is discarded.
pub(crate) struct Held<T> {
    kept: Kept,
    /// The message as it was given: its ends are in the encoding now.
    value: T,
}

/// The encoding of a [`Held`] message; discarded if dropped unsent.
struct Kept {
    port: Arc<PortHandle>,
    msg: Option<OutMessage>,
}

impl Drop for Kept {
    fn drop(&mut self) {
        if let Some(msg) = self.msg.take() {
            self.port.shared.lock().mux.discard_unsent(msg);
        }
    }
}

impl<T> Held<T> {
    /// Discards the encoding (and the ends moved into it): the message as
    /// it was given, its ends spent.
    pub(crate) fn discard(self) -> T {
        self.value
    }

    /// Waits for room, then queues the message.
    pub(crate) async fn send(self) -> Result<(), SendError<T>> {
        let Held { mut kept, value } = self;
        let port = kept.port.clone();
        let res = poll_fn(|cx| port.poll_send(cx, &mut kept.msg)).await;
        res.map_err(|f| SendError::from_failure(f, value))
    }
}

struct Unsent<'a> {
    port: &'a PortHandle,
    msg: Option<OutMessage>,
}

impl Drop for Unsent<'_> {
    fn drop(&mut self) {
        if let Some(msg) = self.msg.take() {
            self.port.shared.lock().mux.discard_unsent(msg);
        }
    }
}

impl<T> Serialize for Sender<T>
where
    T: Serialize + DeserializeOwned + Send + 'static,
{
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.attach_index::<S::Error>()?.serialize(s)
    }
}

impl<T> Sender<T>
where
    T: Serialize + DeserializeOwned + Send + 'static,
{
    /// Gives the peer of the connection being encoded for a sender end of
    /// its own; returns its index in the message's port table.
    pub(crate) fn attach_index<E: serde::ser::Error>(&self) -> Result<u32, E> {
        // The peer gets a sender end; this side reads the port.
        let (index, port) = attach_port::<E>(End::Sender)?;
        match &self.inner {
            SenderInner::Local { attach, .. } => {
                let attach = attach.clone();
                defer(move || {
                    let mut list = attach.list.lock().unwrap_or_else(|e| e.into_inner());
                    if !list.receiver_gone {
                        // Every send this sender made before it was
                        // serialized has been counted.
                        let before = attach.sent.load(std::sync::atomic::Ordering::Acquire);
                        list.new.push((port, before));
                        drop(list);
                        attach.fresh.store(true, std::sync::atomic::Ordering::Release);
                        attach.waker.wake();
                    }
                });
            }
            SenderInner::Remote(onward) => {
                // Forwarding: what arrives on the new port goes on to ours,
                // relayed without decoding.
                let onward = onward.clone();
                defer(move || spawn_splice(RemoteRecv::new(port), onward));
            }
        }
        Ok(index)
    }
}

impl<'de, T> Deserialize<'de> for Sender<T>
where
    T: Serialize + DeserializeOwned + Send + 'static,
{
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let index = u32::deserialize(d)?;
        Ok(Sender::from_port(claim_port::<D::Error>(index, End::Sender)?))
    }
}

/// The receiving half.
pub struct Receiver<T> {
    // Behind a mutex only so that serializing (`&self`) can move it out.
    inner: Mutex<Option<RecvInner<T>>>,
}

enum RecvInner<T> {
    Local(LocalRecv<T>),
    Remote(RemoteRecv),
}

struct LocalRecv<T> {
    rx: tokio::sync::mpsc::Receiver<T>,
    attach: Arc<Attach>,
    remotes: Vec<RemoteRecv>,
    /// Ports attached but not read yet: each waits until the local
    /// messages sent before it was attached have been taken (in the order
    /// attached, so their counts only grow).
    waiting: std::collections::VecDeque<(PortHandle, u64)>,
    /// Messages taken from the local channel so far.
    taken: u64,
    next: usize,
    local_done: bool,
    /// The encoded length of the message the last receive returned (0 for
    /// one sent on this node, which is never encoded).
    last_len: usize,
    /// The trace context it carried, until taken.
    last_trace: Option<Box<crate::trace::TraceContext>>,
    /// Which of `remotes` it came from (`usize::MAX`: the local channel);
    /// valid until the next poll.
    last_from: usize,
}

impl<T> fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Receiver")
    }
}

impl<T: DeserializeOwned + Send + 'static> Receiver<T> {
    pub(crate) fn from_port(port: PortHandle) -> Self {
        Receiver { inner: Mutex::new(Some(RecvInner::Remote(RemoteRecv::new(port)))) }
    }

    /// Receives the next message. `Ok(None)` once every sender is gone and
    /// everything sent was read. An error for one message (it does not
    /// decode) leaves the channel usable; a connection error is final.
    pub async fn recv(&mut self) -> Result<Option<T>, RecvError> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// The encoded length of the message the last receive returned: what it
    /// took on the wire, or 0 if it was sent on this node.
    pub(crate) fn last_len(&mut self) -> usize {
        match self.inner.get_mut().unwrap_or_else(|e| e.into_inner()) {
            Some(RecvInner::Remote(r)) => r.last_len(),
            Some(RecvInner::Local(l)) => l.last_len,
            None => 0,
        }
    }

    /// Closes a receiver on this node to its senders and drops what they
    /// had queued; how many messages that was. (A remote one counts its own
    /// when it is dropped.)
    fn close_local(&mut self) -> usize {
        let Some(RecvInner::Local(l)) = self.inner.get_mut().unwrap_or_else(|e| e.into_inner()) else { return 0 };
        l.rx.close();
        std::iter::from_fn(|| l.rx.try_recv().ok()).count()
    }

    /// The message the last receive returned was dropped unread (its actor
    /// refused it): counted with the connection's
    /// [`unread`](crate::ConnectionStats::unread) if it came from one.
    pub(crate) fn count_unread(&mut self) {
        let from = match self.inner.get_mut().unwrap_or_else(|e| e.into_inner()) {
            Some(RecvInner::Remote(r)) => Some(&*r),
            Some(RecvInner::Local(l)) => l.remotes.get(l.last_from),
            None => None,
        };
        if let Some(r) = from {
            r.port.count_unread(1);
        }
    }

    /// The trace context the message the last receive returned carried
    /// (only one received from another node can carry one).
    pub(crate) fn take_trace(&mut self) -> Option<Box<crate::trace::TraceContext>> {
        match self.inner.get_mut().unwrap_or_else(|e| e.into_inner()) {
            Some(RecvInner::Remote(r)) => r.take_trace(),
            Some(RecvInner::Local(l)) => l.last_trace.take(),
            None => None,
        }
    }

    /// Polls for the next message; see [`Receiver::recv`].
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<T>, RecvError>> {
        let inner = self.inner.get_mut().unwrap_or_else(|e| e.into_inner());
        match inner {
            None => Poll::Ready(Ok(None)),
            Some(RecvInner::Remote(r)) => r.poll_recv(cx).map(Option::transpose),
            Some(RecvInner::Local(l)) => l.poll_recv(cx),
        }
    }
}

impl<T: DeserializeOwned + Send + 'static> LocalRecv<T> {
    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<T>, RecvError>> {
        // Ports and the local channel wake this task themselves when they
        // return Pending; the attach waker is only for newly attached ports,
        // and registered only before this poll gives up.
        let mut registered = false;
        loop {
            if self.attach.fresh.swap(false, std::sync::atomic::Ordering::AcqRel) {
                let mut list = self.attach.list.lock().unwrap_or_else(|e| e.into_inner());
                self.waiting.extend(list.new.drain(..));
            }
            self.admit();
            let n = self.remotes.len();
            for i in 0..n {
                let idx = (self.next + i) % n;
                match self.remotes[idx].poll_recv::<T>(cx) {
                    Poll::Ready(Some(Ok(v))) => {
                        self.next = idx + 1;
                        self.last_from = idx;
                        self.last_len = self.remotes[idx].last_len();
                        self.last_trace = self.remotes[idx].take_trace();
                        return Poll::Ready(Ok(Some(v)));
                    }
                    Poll::Ready(Some(Err(e))) => {
                        if matches!(e, RecvError::Connection(_)) {
                            self.remotes.swap_remove(idx);
                        }
                        return Poll::Ready(Err(e));
                    }
                    Poll::Ready(None) => {
                        self.remotes.swap_remove(idx);
                        // Indices moved: start over.
                        return self.poll_recv(cx);
                    }
                    Poll::Pending => {}
                }
            }
            if !self.local_done {
                match self.rx.poll_recv(cx) {
                    Poll::Ready(Some(v)) => {
                        self.taken += 1;
                        self.last_from = usize::MAX;
                        self.last_len = 0;
                        self.last_trace = None;
                        return Poll::Ready(Ok(Some(v)));
                    }
                    Poll::Ready(None) => {
                        // Every local message is taken: the waiting ports'
                        // turn has come.
                        self.local_done = true;
                        self.admit();
                        if !self.remotes.is_empty() {
                            continue;
                        }
                    }
                    Poll::Pending => {}
                }
            }
            if !registered {
                // A port attached after this registers wakes us; one attached
                // before it is seen by another turn of the loop.
                self.attach.waker.register(cx.waker());
                registered = true;
                if self.attach.fresh.load(std::sync::atomic::Ordering::Acquire) {
                    continue;
                }
            }
            if self.local_done && self.remotes.is_empty() {
                // A sender being serialized right now attaches before it can
                // be dropped, so with no local sender left, an empty list is
                // final.
                let mut list = self.attach.list.lock().unwrap_or_else(|e| e.into_inner());
                if list.new.is_empty() && self.waiting.is_empty() {
                    return Poll::Ready(Ok(None));
                }
                self.waiting.extend(list.new.drain(..));
                continue;
            }
            return Poll::Pending;
        }
    }
}

impl<T> LocalRecv<T> {
    /// Starts reading the waiting ports whose turn has come: every local
    /// message sent before each was attached has been taken, or the local
    /// channel is done (then all were).
    fn admit(&mut self) {
        while let Some((_, before)) = self.waiting.front() {
            if *before > self.taken && !self.local_done {
                break;
            }
            let (port, _) = self.waiting.pop_front().expect("a front");
            self.remotes.push(RemoteRecv::new(port));
        }
    }
}

impl<T> Drop for LocalRecv<T> {
    fn drop(&mut self) {
        let mut list = self.attach.list.lock().unwrap_or_else(|e| e.into_inner());
        list.receiver_gone = true;
        list.new.clear();
    }
}

impl<T> Serialize for Receiver<T>
where
    T: Serialize + DeserializeOwned + Send + 'static,
{
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let taken = self.inner.lock().unwrap_or_else(|e| e.into_inner()).take();
        let Some(inner) = taken else {
            return Err(crate::codec::ser_error("this receiver was already sent elsewhere"));
        };
        // The peer gets the receiver end; this side writes to the port what
        // the old receiver would have read.
        let (index, port) = attach_port::<S::Error>(End::Receiver)?;
        match inner {
            RecvInner::Remote(remote) => defer(move || spawn_splice(remote, Arc::new(port))),
            local @ RecvInner::Local(_) => {
                let source = Receiver { inner: Mutex::new(Some(local)) };
                defer(move || spawn_pump(source, Sender::from_port(port)));
            }
        }
        index.serialize(s)
    }
}

impl<'de, T> Deserialize<'de> for Receiver<T>
where
    T: Serialize + DeserializeOwned + Send + 'static,
{
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let index = u32::deserialize(d)?;
        Ok(Receiver::from_port(claim_port::<D::Error>(index, End::Receiver)?))
    }
}

/// Moves messages from `rx` to `tx` until either side ends; this is how a
/// channel end keeps working after it was sent on.
///
/// Messages its senders had handed over when the far end closed (or its
/// connection failed) are counted as unread on the far end's connection:
/// the one in hand and those still queued here.
fn spawn_pump<T>(mut rx: Receiver<T>, tx: Sender<T>)
where
    T: Serialize + DeserializeOwned + Send + 'static,
{
    tokio::spawn(async move {
        loop {
            tokio::select! {
                biased;
                _ = tx.closed() => break,
                msg = rx.recv() => match msg {
                    Ok(Some(v)) => {
                        if tx.send(v).await.is_err() {
                            tx.count_unread(1);
                            break;
                        }
                    }
                    Ok(None) => break,
                    // One sender's connection failed: the receiver here
                    // dropped that sender; the others go on.
                    Err(RecvError::Decode(_) | RecvError::Connection(_)) => continue,
                    Err(RecvError::Dropped) => break,
                },
            }
        }
        tx.count_unread(rx.close_local() as u64);
    });
}
