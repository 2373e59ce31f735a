//! A broadcast channel: every receiver sees every value sent after it
//! subscribed, on whichever node it is.
//!
//! Both ends travel inside messages. The channel lives where it was made
//! (its *origin*), as a tokio [`broadcast`](tokio::sync::broadcast)
//! channel of the capacity given to [`channel`]. A [`Receiver`] sent to
//! another node is fed from the origin through a port of its own; a
//! [`Sender`] sent to another node sends to the origin.
//!
//! A receiver that falls behind by more than the capacity (locally, or
//! because its link is slower than the senders) loses the oldest values
//! and is told how many, with [`RecvError::Lagged`], as tokio's broadcast
//! does; it never slows the senders or the other receivers. What one
//! receiver can hold up is bounded: the capacity at the origin, plus the
//! port's credit window in flight to a remote receiver.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use tether::broadcast;
//!
//! let (tx, mut rx) = broadcast::channel::<u32>(2);
//! for n in 0..5 {
//!     tx.send(n).await.unwrap();
//! }
//! // Capacity 2: the three oldest are gone, and the receiver is told.
//! assert!(matches!(rx.recv().await, Err(broadcast::RecvError::Lagged(3))));
//! assert_eq!(rx.recv().await.unwrap(), 3);
//! assert_eq!(rx.recv().await.unwrap(), 4);
//! # }
//! ```

use std::fmt;
use std::sync::Mutex;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tokio::sync::broadcast as tokio_broadcast;

use super::{attach_port, claim_port, defer, mpsc};
use crate::wire::End;

/// What a broadcast channel's values must be: cloned once per receiver on
/// the origin, and able to travel.
pub trait Value: Clone + Serialize + DeserializeOwned + Send + Sync + 'static {}

impl<T: Clone + Serialize + DeserializeOwned + Send + Sync + 'static> Value for T {}

/// Creates a broadcast channel keeping the last `capacity` values for
/// receivers that have not read them yet.
///
/// # Panics
///
/// If `capacity` is 0 or above `usize::MAX / 2`, as tokio's does.
pub fn channel<T: Value>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    let (tx, rx) = tokio_broadcast::channel(capacity);
    (Sender { inner: SenderInner::Local(tx) }, Receiver::new(RecvInner::Local(rx)))
}

/// A send found no receiver to take the value, which is handed back. A
/// sender on another node than the origin only learns that its link to the
/// origin is gone; a value it sends while no receiver exists is dropped
/// at the origin.
#[derive(Clone, PartialEq, Eq, thiserror::Error)]
#[error("broadcast channel has no receiver")]
pub struct SendError<T>(pub T);

impl<T> fmt::Debug for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SendError(..)")
    }
}

/// Why a receive returned no value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecvError {
    /// Every sender is gone and every value was read (or the connection
    /// to the origin ended: that error came first).
    #[error("every broadcast sender is gone")]
    Closed,
    /// The receiver fell behind and this many values were skipped; the next
    /// receive returns the oldest value still kept.
    #[error("broadcast receiver lagged behind by {0} values")]
    Lagged(u64),
    /// A value from the origin did not decode (the channel goes on), or the
    /// connection to the origin ended (the channel is closed after it).
    #[error(transparent)]
    Remote(#[from] super::RecvError),
}

/// What travels from the origin to a remote receiver.
#[derive(Serialize, Deserialize)]
enum Item<T> {
    Value(T),
    Lagged(u64),
}

/// What a travelled sender asks of the origin.
#[derive(Serialize, Deserialize)]
#[serde(bound = "T: Value")]
enum Op<T> {
    Send(T),
    /// Feed a new receiver through this sender.
    Subscribe(mpsc::Sender<Item<T>>),
}

/// Sends values to every receiver. Cloning makes another sender.
pub struct Sender<T> {
    inner: SenderInner<T>,
}

enum SenderInner<T> {
    Local(tokio_broadcast::Sender<T>),
    /// On another node than the origin: everything goes to the origin.
    Remote(mpsc::Sender<Op<T>>),
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        let inner = match &self.inner {
            SenderInner::Local(tx) => SenderInner::Local(tx.clone()),
            SenderInner::Remote(origin) => SenderInner::Remote(origin.clone()),
        };
        Sender { inner }
    }
}

impl<T> fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner {
            SenderInner::Local(_) => f.write_str("broadcast::Sender(local)"),
            SenderInner::Remote(origin) => write!(f, "broadcast::Sender(to {origin:?})"),
        }
    }
}

impl<T: Value> Sender<T> {
    /// Sends `value` to every receiver subscribed now. On the origin it
    /// never waits; a sender on another node waits while its link to the
    /// origin has no credit left.
    pub async fn send(&self, value: T) -> Result<(), SendError<T>> {
        match &self.inner {
            SenderInner::Local(tx) => tx.send(value).map(drop).map_err(|e| SendError(e.0)),
            SenderInner::Remote(origin) => origin.send(Op::Send(value)).await.map_err(|e| match e.into_inner() {
                Op::Send(value) => SendError(value),
                Op::Subscribe(_) => unreachable!("the op sent was a Send"),
            }),
        }
    }

    /// A new receiver, of the values sent from now on. On a sender away
    /// from the origin "now" is when the origin learns of the subscription,
    /// half a round trip later: values sent through this same sender after
    /// `subscribe` returned are seen, unless the link to the origin was
    /// full (then the request waits for room like a send, and may be
    /// overtaken).
    pub fn subscribe(&self) -> Receiver<T> {
        match &self.inner {
            SenderInner::Local(tx) => Receiver::new(RecvInner::Local(tx.subscribe())),
            SenderInner::Remote(origin) => {
                let (feed, rx) = mpsc::channel(1);
                // If the origin is gone the feed is dropped with the
                // request, and the receiver is closed.
                match origin.try_send_holding(Op::Subscribe(feed)) {
                    Ok(mpsc::Tried::Held(request)) => drop(tokio::spawn(request.send())),
                    Ok(mpsc::Tried::Full(request)) => {
                        let origin = origin.clone();
                        drop(tokio::spawn(async move { origin.send(request).await }));
                    }
                    Ok(mpsc::Tried::Sent) | Err(_) => {}
                }
                Receiver::new(RecvInner::Remote(rx))
            }
        }
    }
}

/// Receives every value sent after it subscribed, or is told how many it
/// missed.
pub struct Receiver<T> {
    // Behind a mutex only so that serializing (`&self`) can move it out.
    inner: Mutex<Option<RecvInner<T>>>,
}

enum RecvInner<T> {
    Local(tokio_broadcast::Receiver<T>),
    Remote(mpsc::Receiver<Item<T>>),
}

impl<T> fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("broadcast::Receiver")
    }
}

impl<T> Receiver<T> {
    fn new(inner: RecvInner<T>) -> Self {
        Receiver { inner: Mutex::new(Some(inner)) }
    }
}

impl<T: Value> Receiver<T> {
    /// The next value. [`RecvError::Lagged`] if values were skipped;
    /// [`RecvError::Closed`] once every sender is gone and all was read
    /// (also for a receiver that was sent elsewhere).
    pub async fn recv(&mut self) -> Result<T, RecvError> {
        let inner = self.inner.get_mut().unwrap_or_else(|e| e.into_inner());
        let result = match inner {
            None => return Err(RecvError::Closed),
            Some(RecvInner::Local(rx)) => rx.recv().await.map_err(|e| match e {
                tokio_broadcast::error::RecvError::Closed => RecvError::Closed,
                tokio_broadcast::error::RecvError::Lagged(n) => RecvError::Lagged(n),
            }),
            Some(RecvInner::Remote(rx)) => match rx.recv().await {
                Ok(Some(Item::Value(v))) => Ok(v),
                Ok(Some(Item::Lagged(n))) => Err(RecvError::Lagged(n)),
                Ok(None) => Err(RecvError::Closed),
                Err(e) => Err(RecvError::Remote(e)),
            },
        };
        if matches!(result, Err(RecvError::Remote(super::RecvError::Connection(_)))) {
            *inner = None;
        }
        result
    }
}

impl<T: Value> Serialize for Receiver<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let taken = self.inner.lock().unwrap_or_else(|e| e.into_inner()).take();
        match taken {
            None => Err(crate::codec::ser_error("this receiver was already sent elsewhere")),
            // Onward: it goes on being fed through this node.
            Some(RecvInner::Remote(rx)) => rx.serialize(s),
            Some(RecvInner::Local(rx)) => {
                let (index, port) = attach_port::<S::Error>(End::Receiver)?;
                defer(move || feed(rx, mpsc::Sender::from_port(port)));
                index.serialize(s)
            }
        }
    }
}

impl<'de, T: Value> Deserialize<'de> for Receiver<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let index = u32::deserialize(d)?;
        Ok(Receiver::new(RecvInner::Remote(mpsc::Receiver::from_port(claim_port::<D::Error>(index, End::Receiver)?))))
    }
}

impl<T: Value> Serialize for Sender<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let index = match &self.inner {
            SenderInner::Remote(origin) => origin.attach_index::<S::Error>()?,
            SenderInner::Local(tx) => {
                let (index, port) = attach_port::<S::Error>(End::Sender)?;
                let tx = tx.clone();
                defer(move || serve(tx, mpsc::Receiver::from_port(port)));
                index
            }
        };
        index.serialize(s)
    }
}

impl<'de, T: Value> Deserialize<'de> for Sender<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let index = u32::deserialize(d)?;
        Ok(Sender { inner: SenderInner::Remote(mpsc::Sender::from_port(claim_port::<D::Error>(index, End::Sender)?)) })
    }
}

/// Feeds a remote receiver from the origin: values in order, and how many
/// were skipped wherever the link could not keep up. While a send waits
/// for credit, `rx` is not read, so a slow link lags here like a slow local
/// receiver, and holds no more than the channel's capacity.
fn feed<T: Value>(mut rx: tokio_broadcast::Receiver<T>, to: mpsc::Sender<Item<T>>) {
    tokio::spawn(async move {
        loop {
            let item = tokio::select! {
                biased;
                _ = to.closed() => break,
                next = rx.recv() => match next {
                    Ok(v) => Item::Value(v),
                    Err(tokio_broadcast::error::RecvError::Lagged(n)) => Item::Lagged(n),
                    Err(tokio_broadcast::error::RecvError::Closed) => break,
                },
            };
            if to.send(item).await.is_err() {
                break;
            }
        }
    });
}

/// Serves a travelled sender at the origin until it (and every copy of it)
/// is gone.
fn serve<T: Value>(tx: tokio_broadcast::Sender<T>, mut ops: mpsc::Receiver<Op<T>>) {
    tokio::spawn(async move {
        loop {
            match ops.recv().await {
                // No receiver now: the value reaches nobody, as a local send
                // would (a remote sender cannot be told in time).
                Ok(Some(Op::Send(v))) => drop(tx.send(v)),
                Ok(Some(Op::Subscribe(to))) => feed(tx.subscribe(), to),
                Ok(None) | Err(mpsc::RecvError::Connection(_)) => break,
                Err(e) => tracing::warn!(error = %e, "broadcast: a travelled sender's request does not decode"),
            }
        }
    });
}
