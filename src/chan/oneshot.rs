//! A channel for exactly one message, whose ends can travel inside
//! messages: the usual way to carry a reply.
//!
//! Dropping the [`Sender`] without sending ends the [`Receiver`] at once with
//! [`RecvError::Dropped`], locally or across a connection.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::mpsc;
use crate::codec::CodecError;

/// Creates a one-shot channel.
pub fn channel<T: Send + 'static>() -> (Sender<T>, Receiver<T>) {
    let (tx, rx) = mpsc::channel(1);
    (Sender(tx), Receiver(rx))
}

/// Why a one-shot receive failed: the channels' one [`RecvError`]; a
/// sender dropped without sending is [`RecvError::Dropped`].
pub use super::RecvError;

/// Why a one-shot send failed; the value is handed back.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum SendError<T> {
    /// The receiver is gone, or the connection carrying the channel ended.
    #[error("receiver gone")]
    Closed(T),
    /// The value's encoding exceeds the peer's `max_message` limit.
    #[error("the value's {size} bytes exceed the peer's max_message of {max}")]
    TooLarge {
        /// The value.
        value: T,
        /// Its encoded size.
        size: usize,
        /// The peer's limit.
        max: u32,
    },
    /// The value does not encode.
    #[error("the value does not encode: {error}")]
    Encode {
        /// The value.
        value: T,
        /// What went wrong.
        error: CodecError,
    },
}

impl<T> SendError<T> {
    /// The value that was not sent.
    pub fn into_inner(self) -> T {
        match self {
            SendError::Closed(v) | SendError::TooLarge { value: v, .. } | SendError::Encode { value: v, .. } => v,
        }
    }

    /// Whether the receiver is gone.
    pub fn is_closed(&self) -> bool {
        matches!(self, SendError::Closed(_))
    }
}

impl<T> fmt::Debug for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Closed(_) => f.write_str("Closed(..)"),
            SendError::TooLarge { size, max, .. } => write!(f, "TooLarge {{ size: {size}, max: {max} }}"),
            SendError::Encode { error, .. } => write!(f, "Encode({error:?})"),
        }
    }
}

impl<T> From<mpsc::SendError<T>> for SendError<T> {
    fn from(e: mpsc::SendError<T>) -> Self {
        match e {
            // A one-shot's single message is never refused for room.
            mpsc::SendError::Closed(v) | mpsc::SendError::Full(v) => SendError::Closed(v),
            mpsc::SendError::TooLarge { value, size, max } => SendError::TooLarge { value, size, max },
            mpsc::SendError::Encode { value, error } => SendError::Encode { value, error },
        }
    }
}

/// Sends the one message.
pub struct Sender<T>(mpsc::Sender<T>);

impl<T> fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "oneshot::{:?}", self.0)
    }
}

impl<T: Serialize + Send + 'static> Sender<T> {
    pub(crate) fn from_mpsc(inner: mpsc::Sender<T>) -> Self {
        Sender(inner)
    }

    /// Sends the value; never waits. Fails with `Closed` if the receiver is
    /// gone.
    pub fn send(self, value: T) -> Result<(), SendError<T>> {
        self.0.send_now(value, true).map_err(SendError::from)
    }

    /// Sends the value like [`send`](Self::send), except that a value that
    /// cannot be carried (too large, does not encode) hands the sender back
    /// beside the error, so that something else can be sent in its place
    /// (why the first could not). `Closed` gives no sender back.
    pub fn send_or_keep(self, value: T) -> Result<(), (Option<Self>, SendError<T>)> {
        match self.0.send_now(value, true) {
            Ok(()) => Ok(()),
            Err(e) => {
                let e = SendError::from(e);
                if e.is_closed() {
                    Err((None, e))
                } else {
                    Err((Some(self), e))
                }
            }
        }
    }

    /// Resolves once the receiver is gone.
    pub async fn closed(&self) {
        self.0.closed().await
    }

    /// Whether the receiver is gone.
    pub fn is_closed(&self) -> bool {
        self.0.is_closed()
    }
}

/// Receives the one message: await it.
pub struct Receiver<T>(mpsc::Receiver<T>);

impl<T> fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("oneshot::Receiver")
    }
}

impl<T: DeserializeOwned + Send + 'static> Future for Receiver<T> {
    type Output = Result<T, RecvError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.get_mut().0.poll_recv(cx).map(|r| match r {
            Ok(Some(v)) => Ok(v),
            Ok(None) => Err(RecvError::Dropped),
            Err(e) => Err(e),
        })
    }
}

impl<T: Serialize + DeserializeOwned + Send + 'static> Sender<T> {
    /// Serializes this end for the connection being encoded for, keeping it
    /// alive until the message is complete.
    pub(crate) fn attach_index(self) -> Result<u32, String> {
        let index = self.0.attach_index::<super::TextError>().map_err(|e| e.0)?;
        super::defer(move || drop(self));
        Ok(index)
    }
}

impl<T: Serialize + DeserializeOwned + Send + 'static> Serialize for Sender<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de, T: Serialize + DeserializeOwned + Send + 'static> Deserialize<'de> for Sender<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        mpsc::Sender::deserialize(d).map(Sender)
    }
}

impl<T: Serialize + DeserializeOwned + Send + 'static> Serialize for Receiver<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de, T: Serialize + DeserializeOwned + Send + 'static> Deserialize<'de> for Receiver<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        mpsc::Receiver::deserialize(d).map(Receiver)
    }
}
