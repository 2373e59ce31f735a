//! A watched value: one sender publishes, receivers see the latest value.
//!
//! The [`Receiver`] can travel inside messages; it arrives with the current
//! value and then follows every change. Changes are coalesced: a slow link
//! skips intermediate values, never the latest.

use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{attach_port, claim_port, defer, mpsc, PortHandle};
use crate::wire::End;

/// Creates a watch channel holding `init`.
pub fn channel<T>(init: T) -> (Sender<T>, Receiver<T>) {
    let (tx, rx) = tokio::sync::watch::channel(init);
    (Sender(tx), Receiver(rx))
}

/// The sender is gone: no more changes will come.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("watch sender is gone")]
pub struct Closed;

/// Publishes values.
pub struct Sender<T>(tokio::sync::watch::Sender<T>);

impl<T> fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("watch::Sender")
    }
}

impl<T> Sender<T> {
    /// Publishes a new value, even if no receiver is left.
    pub fn send_replace(&self, value: T) -> T {
        self.0.send_replace(value)
    }

    /// A new receiver of this value.
    pub fn subscribe(&self) -> Receiver<T> {
        Receiver(self.0.subscribe())
    }

    /// Resolves once every receiver is gone.
    pub async fn closed(&self) {
        self.0.closed().await
    }
}

/// Observes the value.
#[derive(Clone)]
pub struct Receiver<T>(tokio::sync::watch::Receiver<T>);

impl<T> fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("watch::Receiver")
    }
}

impl<T> Receiver<T> {
    /// The latest value.
    pub fn borrow(&self) -> tokio::sync::watch::Ref<'_, T> {
        self.0.borrow()
    }

    /// The latest value, marking it seen.
    pub fn borrow_and_update(&mut self) -> tokio::sync::watch::Ref<'_, T> {
        self.0.borrow_and_update()
    }

    /// Waits for a value not yet seen.
    pub async fn changed(&mut self) -> Result<(), Closed> {
        self.0.changed().await.map_err(|_| Closed)
    }
}

#[derive(Serialize, Deserialize)]
struct Wire<V> {
    port: u32,
    value: V,
}

impl<T> Serialize for Receiver<T>
where
    T: Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
{
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let (port, handle) = attach_port::<S::Error>(End::Receiver)?;
        let mut local = self.0.clone();
        let value = local.borrow_and_update().clone();
        defer(move || {
            let remote = mpsc::Sender::<T>::from_port(handle);
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        biased;
                        _ = remote.closed() => break,
                        changed = local.changed() => {
                            if changed.is_err() {
                                break;
                            }
                            let v = local.borrow_and_update().clone();
                            if remote.send(v).await.is_err() {
                                break;
                            }
                        }
                    }
                }
            });
        });
        Wire { port, value }.serialize(s)
    }
}

impl<'de, T> Deserialize<'de> for Receiver<T>
where
    T: Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
{
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let wire = Wire::<T>::deserialize(d)?;
        let handle: PortHandle = claim_port::<D::Error>(wire.port, End::Receiver)?;
        let mut remote = mpsc::Receiver::<T>::from_port(handle);
        let (tx, rx) = tokio::sync::watch::channel(wire.value);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    biased;
                    _ = tx.closed() => break,
                    msg = remote.recv() => match msg {
                        Ok(Some(v)) => {
                            tx.send_replace(v);
                        }
                        Ok(None) | Err(mpsc::RecvError::Connection(_)) => break,
                        Err(_) => continue,
                    },
                }
            }
        });
        Ok(Receiver(rx))
    }
}
