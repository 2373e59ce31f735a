//! Requests that stay open: a stream of replies ([`RemoteRef::ask_stream`])
//! and a request carrying updates both ways before its response
//! ([`RemoteRef::open_request`]).
//!
//! Both are channels of the layer below put in the request: updates and
//! the response travel on one channel, so the asker reads them in the order
//! the handler sent them. The end is said: a stream ends with
//! [`ReplyStream::end`], an open request with [`RequestPort::respond`]; a
//! handler that drops its end without (the actor stopped, or failed) fails
//! the asker with [`AskError::NoReply`], so a cut-off stream never looks
//! complete. Dropping the asker's end cancels: the handler's
//! `cancelled()` resolves half a round trip later, as
//! [`ReplyPort::cancelled`](super::ReplyPort::cancelled) does.

use std::fmt;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use futures::Stream;
use serde::{Deserialize, Serialize};

use super::mailbox::RemoteMessage;
use super::remote_ref::{AskError, AskPermit, RemoteRef, TellError};
use crate::chan::{mpsc, RecvError};

/// Pieces of replies a channel holds on the asker's node before the
/// handler waits; across a connection the bound is the port's credit.
const CAPACITY: usize = 16;

/// What the handler sends back: updates, then one final piece.
#[derive(Serialize, Deserialize)]
enum Down<D, R> {
    Update(D),
    Done(R),
}

/// The handler's end of [`RemoteRef::ask_stream`]: put it in the request
/// message; each [`send`](Self::send) is one reply; [`end`](Self::end) says
/// that all were sent.
#[derive(Serialize, Deserialize)]
#[serde(bound = "R: RemoteMessage")]
pub struct ReplyStream<R> {
    down: mpsc::Sender<Down<R, ()>>,
}

impl<R> fmt::Debug for ReplyStream<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ReplyStream")
    }
}

impl<R: RemoteMessage> ReplyStream<R> {
    /// A stream's two ends, for adapters and programs that build requests
    /// themselves.
    pub fn channel() -> (ReplyStream<R>, Replies<R>) {
        let (down, rx) = mpsc::channel(CAPACITY);
        (ReplyStream { down }, Replies { down: rx, done: false, permit: None })
    }

    /// Sends one reply, waiting while the asker's window is full. Fails,
    /// handing the reply back, once the asker is gone (dropped its stream,
    /// or the connection ended): stop the work then.
    pub async fn send(&self, reply: R) -> Result<(), R> {
        self.down.send(Down::Update(reply)).await.map_err(|e| match e.into_inner() {
            Down::Update(reply) => reply,
            Down::Done(()) => unreachable!("an update was sent"),
        })
    }

    /// Ends the stream: the asker's stream returns `None` after the replies
    /// sent before. Without it, the asker gets [`AskError::NoReply`]. Waits,
    /// like [`send`](Self::send), while the asker's window is full: the end
    /// is a message of its own, never dropped for want of room.
    pub async fn end(self) {
        // Nothing left to do if the asker is gone.
        let _ = self.down.send(Down::Done(())).await;
    }

    /// Whether the asker is gone.
    pub fn is_closed(&self) -> bool {
        self.down.is_closed()
    }

    /// Resolves once the asker is gone (see
    /// [`ReplyPort::cancelled`](super::ReplyPort::cancelled)).
    pub async fn cancelled(&self) {
        self.down.closed().await
    }
}

/// The asker's end of [`RemoteRef::ask_stream`]: a [`Stream`] of replies,
/// `None` after the handler's [`ReplyStream::end`]. Dropping it cancels the
/// request.
///
/// A `Stream`, so an actix actor takes it into its mailbox with
/// `ctx.add_stream(replies)` (a `StreamHandler<Result<R, AskError>>`).
pub struct Replies<R> {
    down: mpsc::Receiver<Down<R, ()>>,
    done: bool,
    permit: Option<AskPermit>,
}

impl<R> fmt::Debug for Replies<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Replies").field("done", &self.done).finish()
    }
}

impl<R: RemoteMessage> Replies<R> {
    /// The next reply; `None` once the stream ended (or failed: the error
    /// came first).
    pub async fn next(&mut self) -> Option<Result<R, AskError>> {
        std::future::poll_fn(|cx| self.poll_reply(cx)).await
    }

    fn poll_reply(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<R, AskError>>> {
        if self.done {
            return Poll::Ready(None);
        }
        let item = match ready!(self.down.poll_recv(cx)) {
            Ok(Some(Down::Update(reply))) => return Poll::Ready(Some(Ok(reply))),
            Ok(Some(Down::Done(()))) => None,
            Ok(None) => Some(Err(AskError::NoReply)),
            // One reply that does not decode: reported, the stream goes on.
            Err(e @ RecvError::Decode(_)) => return Poll::Ready(Some(Err(AskError::Reply(e)))),
            Err(e) => Some(Err(AskError::Reply(e))),
        };
        self.done = true;
        // An ended stream no longer counts as a pending ask.
        self.permit = None;
        Poll::Ready(item)
    }
}

impl<R: RemoteMessage> Stream for Replies<R> {
    type Item = Result<R, AskError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_reply(cx)
    }
}

/// The handler's end of [`RemoteRef::open_request`]: updates from the asker come
/// in with [`recv`](Self::recv), updates to it go with
/// [`send`](Self::send), and [`respond`](Self::respond) ends the request.
#[derive(Serialize, Deserialize)]
#[serde(bound = "U: RemoteMessage, D: RemoteMessage, R: RemoteMessage")]
pub struct RequestPort<U, D, R> {
    // Boxed: a receiver is large, and a port sits in a message enum.
    up: Box<mpsc::Receiver<U>>,
    down: mpsc::Sender<Down<D, R>>,
}

impl<U, D, R> fmt::Debug for RequestPort<U, D, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RequestPort")
    }
}

impl<U: RemoteMessage, D: RemoteMessage, R: RemoteMessage> RequestPort<U, D, R> {
    /// An open request's two ends, for adapters and programs that build
    /// requests themselves.
    pub fn channel() -> (RequestPort<U, D, R>, OpenRequest<U, D, R>) {
        let (up_tx, up) = mpsc::channel(CAPACITY);
        let (down, down_rx) = mpsc::channel(CAPACITY);
        (
            RequestPort { up: Box::new(up), down },
            OpenRequest { up: Some(up_tx), down: down_rx, response: None, permit: None },
        )
    }

    /// The next update from the asker; `Ok(None)` once it sends no more
    /// (it called [`OpenRequest::close`], or is gone). An update that does
    /// not decode is an error and the request goes on.
    pub async fn recv(&mut self) -> Result<Option<U>, RecvError> {
        self.up.recv().await
    }

    /// Sends an update to the asker, waiting while its window is full;
    /// hands the update back once the asker is gone.
    pub async fn send(&self, update: D) -> Result<(), D> {
        self.down.send(Down::Update(update)).await.map_err(|e| match e.into_inner() {
            Down::Update(update) => update,
            Down::Done(_) => unreachable!("an update was sent"),
        })
    }

    /// Ends the request with its response, after the updates sent before,
    /// waiting while the asker's window is full. Hands the response back if
    /// the asker is gone.
    pub async fn respond(self, response: R) -> Result<(), R> {
        self.down.send(Down::Done(response)).await.map_err(|e| match e.into_inner() {
            Down::Done(response) => response,
            Down::Update(_) => unreachable!("the response was sent"),
        })
    }

    /// Whether the asker is gone.
    pub fn is_closed(&self) -> bool {
        self.down.is_closed()
    }

    /// Resolves once the asker is gone (see
    /// [`ReplyPort::cancelled`](super::ReplyPort::cancelled)).
    pub async fn cancelled(&self) {
        self.down.closed().await
    }
}

/// The asker's end of [`RemoteRef::open_request`]. Dropping it cancels the request.
pub struct OpenRequest<U, D, R> {
    up: Option<mpsc::Sender<U>>,
    down: mpsc::Receiver<Down<D, R>>,
    /// The response, once it arrived behind the updates.
    response: Option<R>,
    permit: Option<AskPermit>,
}

impl<U, D, R> fmt::Debug for OpenRequest<U, D, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenRequest").field("responded", &self.response.is_some()).finish()
    }
}

impl<U: RemoteMessage, D: RemoteMessage, R: RemoteMessage> OpenRequest<U, D, R> {
    /// Sends an update to the handler, waiting while its window is full.
    /// Hands the update back if the handler is gone, stopped reading
    /// updates, or this side [closed](Self::close) them.
    pub async fn send(&self, update: U) -> Result<(), U> {
        match &self.up {
            Some(up) => up.send(update).await.map_err(|e| e.into_inner()),
            None => Err(update),
        }
    }

    /// Sends no more updates: the handler's [`RequestPort::recv`] returns
    /// `Ok(None)` after those sent before.
    pub fn close(&mut self) {
        self.up = None;
    }

    /// The next update from the handler; `Ok(None)` once the response
    /// arrived (take it with [`response`](Self::response)).
    /// [`AskError::NoReply`] if the handler dropped the request without a
    /// response.
    pub async fn recv(&mut self) -> Result<Option<D>, AskError> {
        if self.response.is_some() {
            return Ok(None);
        }
        match self.down.recv().await {
            Ok(Some(Down::Update(update))) => Ok(Some(update)),
            Ok(Some(Down::Done(response))) => {
                self.response = Some(response);
                // Answered: no longer a pending ask.
                self.permit = None;
                Ok(None)
            }
            Ok(None) => Err(AskError::NoReply),
            Err(e) => Err(AskError::Reply(e)),
        }
    }

    /// Waits for the response. Updates not yet read are dropped: read them
    /// with [`recv`](Self::recv) first to see them all. If the request ends
    /// without a response after a message that did not decode, that
    /// message's error is returned (it was most likely the response).
    pub async fn response(mut self) -> Result<R, AskError> {
        self.up = None;
        let mut undecoded = None;
        loop {
            match self.recv().await {
                Ok(Some(_)) => {}
                Err(AskError::Reply(e @ RecvError::Decode(_))) => undecoded = Some(e),
                Ok(None) => return Ok(self.response.take().expect("recv returns None after the response")),
                Err(AskError::NoReply) => return Err(undecoded.map_or(AskError::NoReply, AskError::Reply)),
                Err(e) => return Err(e),
            }
        }
    }
}

impl<M: RemoteMessage> RemoteRef<M> {
    /// Sends the message `make` builds around a fresh [`ReplyStream`] and
    /// returns the stream of replies the actor sends on it, once the
    /// request is on its way. Counted against
    /// [`Config::max_pending_asks`](crate::Config::max_pending_asks) until the
    /// stream is dropped. No timeout: wrap [`Replies::next`] in one where a
    /// reply is due in time (dropping the stream cancels the request).
    ///
    /// ```no_run
    /// use serde::{Deserialize, Serialize};
    /// use tether::{AskError, RemoteRef, ReplyStream};
    ///
    /// #[derive(Serialize, Deserialize)]
    /// struct Count {
    ///     to: u32,
    ///     replies: ReplyStream<u32>,
    /// }
    ///
    /// // The handler: `for n in 0..to { replies.send(n).await? } replies.end().await`
    /// async fn count(counter: RemoteRef<Count>) -> Result<(), AskError> {
    ///     let mut replies = counter.ask_stream(|replies| Count { to: 3, replies }).await?;
    ///     while let Some(n) = replies.next().await {
    ///         println!("{}", n?);
    ///     }
    ///     Ok(())
    /// }
    /// ```
    pub async fn ask_stream<R: RemoteMessage>(
        &self,
        make: impl FnOnce(ReplyStream<R>) -> M,
    ) -> Result<Replies<R>, AskError> {
        let permit = self.ask_permit()?;
        let (port, mut replies) = ReplyStream::channel();
        self.request(make(port)).await?;
        replies.permit = Some(permit);
        Ok(replies)
    }

    /// Sends the message `make` builds around a fresh [`RequestPort`] and
    /// returns the asker's end of the request, open once the request is on
    /// its way: updates go both ways until the handler responds. Counted
    /// against [`Config::max_pending_asks`](crate::Config::max_pending_asks)
    /// until dropped.
    pub async fn open_request<U, D, R>(
        &self,
        make: impl FnOnce(RequestPort<U, D, R>) -> M,
    ) -> Result<OpenRequest<U, D, R>, AskError>
    where
        U: RemoteMessage,
        D: RemoteMessage,
        R: RemoteMessage,
    {
        let permit = self.ask_permit()?;
        let (port, mut open) = RequestPort::channel();
        self.request(make(port)).await?;
        open.permit = Some(permit);
        Ok(open)
    }

    /// Delivers a request, failing the way an ask fails.
    pub(crate) async fn request(&self, msg: M) -> Result<(), AskError> {
        self.tell(msg).await.map_err(|e| match e {
            TellError::Unreachable { error, .. } => AskError::Unreachable(error),
            TellError::Send(e) => AskError::Send(e.split().1),
            // `tell` waits for room instead.
            TellError::Full(_) => AskError::Send(mpsc::SendError::Full(())),
        })
    }
}
