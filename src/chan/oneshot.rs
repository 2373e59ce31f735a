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
use crate::conn::ConnectionError;

/// Creates a one-shot channel.
pub fn channel<T: Send + 'static>() -> (Sender<T>, Receiver<T>) {
    let (tx, rx) = mpsc::channel(1);
    (Sender(tx), Receiver(rx))
}

/// Why a one-shot receive failed.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecvError {
    /// The sender was dropped without sending.
    #[error("sender dropped without sending")]
    Dropped,
    /// The message does not decode as the expected type.
    #[error("received message does not decode: {0}")]
    Decode(CodecError),
    /// The connection carrying the channel ended.
    #[error(transparent)]
    Connection(ConnectionError),
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
    pub fn send(self, value: T) -> Result<(), mpsc::SendError<T>> {
        self.0.send_now(value, true)
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
            Err(mpsc::RecvError::Decode(e)) => Err(RecvError::Decode(e)),
            Err(mpsc::RecvError::Connection(e)) => Err(RecvError::Connection(e)),
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
