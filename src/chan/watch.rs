//! A watched value: senders publish, receivers see the latest value.
//!
//! Both ends travel inside messages. A [`Receiver`] arrives with the
//! current value and then follows every change. A [`Sender`] sent to
//! another node writes to the value where the channel was made (its
//! *origin*): every receiver, on any node, sees what any sender writes.
//! Changes are coalesced: a slow link skips intermediate values, never the
//! latest.

use std::fmt;
use std::sync::Arc;

use futures::FutureExt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{attach_port, claim_port, defer, mpsc, oneshot, PortHandle};
use crate::wire::End;

/// Creates a watch channel holding `init`.
pub fn channel<T>(init: T) -> (Sender<T>, Receiver<T>) {
    let (tx, rx) = tokio::sync::watch::channel(init);
    (Sender { inner: SenderInner::Local(Arc::new(tx)) }, Receiver(rx))
}

/// The sender is gone: no more changes will come.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("watch sender is gone")]
pub struct Closed;

/// Publishes values.
///
/// A sender that travelled to another node writes to the origin's value;
/// its writes are coalesced on the way like a receiver's changes, so a
/// burst of writes is sure to leave the last one in place.
pub struct Sender<T> {
    inner: SenderInner<T>,
}

enum SenderInner<T> {
    /// The value lives here. Shared with the tasks that serve this
    /// sender's travelled copies, so the value lives until the last
    /// sender anywhere is gone.
    Local(Arc<tokio::sync::watch::Sender<T>>),
    /// The value lives on another node. `writes` holds the latest value
    /// this sender wrote (or the origin's when it arrived); a pump task
    /// carries each change to the origin through `origin`, and asks it for
    /// the receivers `subscribe` wants, after the writes made before them.
    Remote { writes: tokio::sync::watch::Sender<T>, origin: mpsc::Sender<Op<T>>, subscribe: Arc<Subscriptions<T>> },
}

/// Receivers subscribed through a travelled sender, waiting for its pump to
/// ask the origin for them. Each is the sending side of the receiver
/// `subscribe` returned; closed ones are dropped as others come, so what
/// waits is no more than the receivers the program holds. `None` once the
/// pump is gone: a receiver subscribed then is closed at once.
struct Subscriptions<T> {
    waiting: std::sync::Mutex<Option<Vec<tokio::sync::watch::Sender<T>>>>,
    wanted: tokio::sync::Notify,
}

/// What a travelled sender asks of its origin.
#[derive(Serialize, Deserialize)]
#[serde(bound = "T: Clone + Serialize + DeserializeOwned + Send + Sync + 'static")]
enum Op<T> {
    /// Publish this value.
    Set(T),
    /// Send back a receiver of the value.
    Subscribe(oneshot::Sender<Receiver<T>>),
}

impl<T> fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner {
            SenderInner::Local(_) => f.write_str("watch::Sender(local)"),
            SenderInner::Remote { origin, .. } => write!(f, "watch::Sender(to {origin:?})"),
        }
    }
}

impl<T> Sender<T> {
    /// Publishes a new value, even if no receiver is left; returns the value
    /// it replaced. On a sender that travelled to another node, that is the
    /// value this sender last knew: its own last write, or the origin's
    /// value when the sender arrived; the write reaches the origin
    /// asynchronously.
    pub fn send_replace(&self, value: T) -> T {
        match &self.inner {
            SenderInner::Local(tx) => tx.send_replace(value),
            SenderInner::Remote { writes, .. } => writes.send_replace(value),
        }
    }

    /// A new receiver of this value. On a travelled sender it starts with
    /// the value this sender last knew and follows the origin's value once
    /// the origin answers, which it does after taking the writes this
    /// sender made before (so the receiver never goes back past them).
    pub fn subscribe(&self) -> Receiver<T>
    where
        T: Clone,
    {
        match &self.inner {
            SenderInner::Local(tx) => Receiver(tx.subscribe()),
            SenderInner::Remote { writes, subscribe, .. } => {
                let (tx, rx) = tokio::sync::watch::channel(writes.borrow().clone());
                let mut waiting = subscribe.waiting.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(waiting) = waiting.as_mut() {
                    waiting.retain(|w| !w.is_closed());
                    waiting.push(tx);
                    subscribe.wanted.notify_one();
                }
                Receiver(rx)
            }
        }
    }

    /// Resolves once every receiver is gone. A travelled sender cannot see
    /// the receivers at its origin: its `closed` resolves once its link to
    /// the origin is gone (the connection ended), after which its writes go
    /// nowhere.
    pub async fn closed(&self) {
        match &self.inner {
            SenderInner::Local(tx) => tx.closed().await,
            // The pump holds the only receiver of `writes`, and ends with
            // the origin.
            SenderInner::Remote { writes, .. } => writes.closed().await,
        }
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

/// A travelling end: the port it talks through, and the value it starts
/// with.
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
        Ok(follow(mpsc::Receiver::from_port(handle), wire.value))
    }
}

/// A receiver starting at `value` and taking every value `remote` brings.
fn follow<T>(mut remote: mpsc::Receiver<T>, value: T) -> Receiver<T>
where
    T: Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
{
    let (tx, rx) = tokio::sync::watch::channel(value);
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
    Receiver(rx)
}

impl<T> Serialize for Sender<T>
where
    T: Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
{
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match &self.inner {
            SenderInner::Local(tx) => {
                // The peer gets a sender end; this side serves its `Op`s.
                let (port, handle) = attach_port::<S::Error>(End::Sender)?;
                let tx = tx.clone();
                let value = tx.borrow().clone();
                defer(move || serve(tx, mpsc::Receiver::from_port(handle)));
                Wire { port, value }.serialize(s)
            }
            // Onward: the new peer talks to the origin through this node.
            SenderInner::Remote { writes, origin, .. } => {
                let port = origin.attach_index::<S::Error>()?;
                Wire { port, value: writes.borrow().clone() }.serialize(s)
            }
        }
    }
}

impl<'de, T> Deserialize<'de> for Sender<T>
where
    T: Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
{
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let wire = Wire::<T>::deserialize(d)?;
        let origin = mpsc::Sender::<Op<T>>::from_port(claim_port::<D::Error>(wire.port, End::Sender)?);
        let (writes, written) = tokio::sync::watch::channel(wire.value);
        let subscribe = Arc::new(Subscriptions { waiting: Some(Vec::new()).into(), wanted: Default::default() });
        tokio::spawn(pump(written, origin.clone(), subscribe.clone()));
        Ok(Sender { inner: SenderInner::Remote { writes, origin, subscribe } })
    }
}

/// Serves a travelled sender at the origin: publishes its writes and
/// answers its subscriptions, until it (and every copy of it) is gone.
fn serve<T>(tx: Arc<tokio::sync::watch::Sender<T>>, mut ops: mpsc::Receiver<Op<T>>)
where
    T: Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
{
    tokio::spawn(async move {
        loop {
            match ops.recv().await {
                Ok(Some(Op::Set(v))) => {
                    tx.send_replace(v);
                }
                Ok(Some(Op::Subscribe(reply))) => {
                    // The asker may be gone already; so is its receiver.
                    let _ = reply.send(Receiver(tx.subscribe()));
                }
                Ok(None) | Err(mpsc::RecvError::Connection(_)) => break,
                Err(e) => tracing::warn!(error = %e, "watch: a travelled sender's request does not decode"),
            }
        }
    });
}

/// Carries a travelled sender's writes to the origin, latest first
/// (coalesced), and asks the origin for the receivers subscribed here, each
/// after the writes made before it. Ends once the sender is gone (after
/// carrying its last write) or the origin is.
async fn pump<T>(
    written: tokio::sync::watch::Receiver<T>,
    origin: mpsc::Sender<Op<T>>,
    subscribe: Arc<Subscriptions<T>>,
) where
    T: Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
{
    carry(written, &origin, &subscribe).await;
    // Receivers still waiting, and any subscribed from now on, are closed.
    subscribe.waiting.lock().unwrap_or_else(|e| e.into_inner()).take();
}

async fn carry<T>(
    mut written: tokio::sync::watch::Receiver<T>,
    origin: &mpsc::Sender<Op<T>>,
    subscribe: &Subscriptions<T>,
) where
    T: Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
{
    loop {
        tokio::select! {
            biased;
            _ = origin.closed() => break,
            () = subscribe.wanted.notified() => {
                let waiting = subscribe.waiting.lock().unwrap_or_else(|e| e.into_inner()).as_mut().map(std::mem::take);
                // A write not carried yet goes first: the origin answers
                // after applying it. (`changed` tells an unseen write even
                // once the sender is dropped, where `has_changed` errs; a
                // write already carried must not go again, as another
                // sender may have written since.)
                if let Some(Ok(())) = written.changed().now_or_never() {
                    let v = written.borrow_and_update().clone();
                    if origin.send(Op::Set(v)).await.is_err() {
                        break;
                    }
                }
                for tx in waiting.into_iter().flatten().filter(|tx| !tx.is_closed()) {
                    let (reply, answer) = oneshot::channel();
                    if origin.send(Op::Subscribe(reply)).await.is_err() {
                        return;
                    }
                    tokio::spawn(follow_answer(answer, tx));
                }
            }
            changed = written.changed() => {
                // A change not yet carried comes first, even once the
                // sender is gone: the last write is never lost.
                if changed.is_err() {
                    break;
                }
                let v = written.borrow_and_update().clone();
                if origin.send(Op::Set(v)).await.is_err() {
                    break;
                }
            }
        }
    }
}

/// Feeds a receiver subscribed through a travelled sender from the
/// receiver the origin sends back, until either is gone.
async fn follow_answer<T>(answer: oneshot::Receiver<Receiver<T>>, tx: tokio::sync::watch::Sender<T>)
where
    T: Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
{
    let Ok(mut theirs) = answer.await else { return };
    loop {
        tx.send_replace(theirs.borrow_and_update().clone());
        tokio::select! {
            biased;
            _ = tx.closed() => break,
            changed = theirs.changed() => if changed.is_err() { break },
        }
    }
}
