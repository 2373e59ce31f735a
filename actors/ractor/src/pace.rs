//! Paced actors: a ractor actor that counts what it handled, so that its
//! export can tell when a message was handled and push back on senders.
//!
//! ractor says nothing about an actor's mailbox to a holder of its
//! `ActorRef`: no queue length, no per-message hook. So [`Paced::spawn`]
//! runs the user's actor inside [`PacedActor`], which delegates every
//! callback with the same `myself` and counts each `handle` that returns.
//! The export numbers what it casts; the message numbered `n` has been
//! handled once `n` handles have returned, because the mailbox is FIFO.

use std::collections::VecDeque;
use std::fmt;
use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex, MutexGuard};

use ractor::concurrency::JoinHandle;
use ractor::{Actor, ActorCell, ActorName, ActorProcessingErr, ActorRef, SpawnErr, SupervisionEvent};
use tokio::sync::oneshot;

/// A local ractor actor spawned to be exported with backpressure: its
/// `ActorRef`, plus the count of handled messages that
/// [`export_paced`](crate::export_paced) needs.
///
/// Spawn it as you would with ractor's `Actor::spawn` or `spawn_linked`; it
/// derefs to the actor's `ActorRef<M>`, which works as usual (the actor's
/// messages, state, supervision and lifecycle are untouched):
///
/// ```
/// # use ractor::{Actor, ActorProcessingErr, ActorRef};
/// # struct Counter;
/// # impl Actor for Counter {
/// #     type Msg = u64;
/// #     type State = u64;
/// #     type Arguments = ();
/// #     async fn pre_start(&self, _: ActorRef<u64>, _: ()) -> Result<u64, ActorProcessingErr> { Ok(0) }
/// #     async fn handle(&self, _: ActorRef<u64>, n: u64, total: &mut u64) -> Result<(), ActorProcessingErr> {
/// #         *total += n;
/// #         Ok(())
/// #     }
/// # }
/// # #[tokio::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use tether_ractor::Paced;
///
/// // Instead of `Actor::spawn(None, Counter, ())`:
/// let (counter, handle) = Paced::spawn(None, Counter, ()).await?;
/// counter.cast(1)?; // an ActorRef<u64> as ever
/// let actor_ref: ActorRef<u64> = counter.actor_ref().clone();
/// # let _ = actor_ref;
/// counter.stop(None);
/// handle.await?;
/// # Ok(()) }
/// ```
///
/// Export it with [`export_paced`](crate::export_paced); an
/// [`export`](crate::export) of its `ActorRef` is not paced. Each message
/// the actor handles costs three atomic operations more.
pub struct Paced<M> {
    actor: ActorRef<M>,
    pace: Arc<Pace>,
}

impl<M: ractor::Message> Paced<M> {
    /// Spawns `handler`, unsupervised, like ractor's `Actor::spawn`, so that
    /// it can be exported with [`export_paced`](crate::export_paced).
    ///
    /// # Errors
    ///
    /// ractor's [`SpawnErr`], as from `Actor::spawn`.
    pub async fn spawn<A: Actor<Msg = M>>(
        name: Option<ActorName>,
        handler: A,
        args: A::Arguments,
    ) -> Result<(Self, JoinHandle<()>), SpawnErr> {
        let pace = Arc::new(Pace::default());
        let (actor, handle) = Actor::spawn(name, PacedActor { inner: handler, pace: pace.clone() }, args).await?;
        Ok((Paced { actor, pace }, handle))
    }

    /// Spawns `handler` supervised by `supervisor`, like ractor's
    /// `Actor::spawn_linked`; see [`spawn`](Self::spawn).
    ///
    /// # Errors
    ///
    /// ractor's [`SpawnErr`], as from `Actor::spawn_linked`.
    pub async fn spawn_linked<A: Actor<Msg = M>>(
        name: Option<ActorName>,
        handler: A,
        args: A::Arguments,
        supervisor: ActorCell,
    ) -> Result<(Self, JoinHandle<()>), SpawnErr> {
        let pace = Arc::new(Pace::default());
        let handler = PacedActor { inner: handler, pace: pace.clone() };
        let (actor, handle) = Actor::spawn_linked(name, handler, args, supervisor).await?;
        Ok((Paced { actor, pace }, handle))
    }
}

impl<M> Paced<M> {
    /// The actor's `ActorRef`.
    pub fn actor_ref(&self) -> &ActorRef<M> {
        &self.actor
    }

    pub(crate) fn into_parts(self) -> (ActorRef<M>, Arc<Pace>) {
        (self.actor, self.pace)
    }
}

impl<M> Deref for Paced<M> {
    type Target = ActorRef<M>;

    fn deref(&self) -> &ActorRef<M> {
        &self.actor
    }
}

impl<M> From<Paced<M>> for ActorRef<M> {
    fn from(p: Paced<M>) -> Self {
        p.actor
    }
}

impl<M> Clone for Paced<M> {
    fn clone(&self) -> Self {
        Paced { actor: self.actor.clone(), pace: self.pace.clone() }
    }
}

impl<M> fmt::Debug for Paced<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Paced").field(&self.actor).finish()
    }
}

/// The user's actor, counting each message it handled.
struct PacedActor<A> {
    inner: A,
    pace: Arc<Pace>,
}

/// The handler lives as long as the actor's task, however that ends (a
/// `post_stop` is skipped when the actor is killed or panics), so this is
/// where waits for messages it will never handle are released.
impl<A> Drop for PacedActor<A> {
    fn drop(&mut self) {
        self.pace.close();
    }
}

impl<A: Actor> Actor for PacedActor<A> {
    type Msg = A::Msg;
    type State = A::State;
    type Arguments = A::Arguments;

    async fn pre_start(&self, myself: ActorRef<A::Msg>, args: A::Arguments) -> Result<A::State, ActorProcessingErr> {
        self.inner.pre_start(myself, args).await
    }

    async fn post_start(&self, myself: ActorRef<A::Msg>, state: &mut A::State) -> Result<(), ActorProcessingErr> {
        self.inner.post_start(myself, state).await
    }

    async fn post_stop(&self, myself: ActorRef<A::Msg>, state: &mut A::State) -> Result<(), ActorProcessingErr> {
        self.inner.post_stop(myself, state).await
    }

    async fn handle(
        &self,
        myself: ActorRef<A::Msg>,
        msg: A::Msg,
        state: &mut A::State,
    ) -> Result<(), ActorProcessingErr> {
        let outcome = self.inner.handle(myself, msg, state).await;
        // Counted also when the handler failed: the message is done with
        // (and the actor stops). A panic skips this; the actor fails and
        // `Drop` releases the waits.
        self.pace.handled();
        outcome
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<A::Msg>,
        event: SupervisionEvent,
        state: &mut A::State,
    ) -> Result<(), ActorProcessingErr> {
        // Supervision events come on a port of their own, not through the
        // mailbox the export fills: not counted.
        self.inner.handle_supervisor_evt(myself, event, state).await
    }
}

/// What the exports of a paced actor handed it, and what it has handled.
///
/// Invariant: `handled <= delivered`. The actor cannot say which message it
/// handled, so it counts every one, but only while the count is below
/// `delivered`: a message that reached it around the exports (a local
/// `cast`, a timer) counts in place of one of theirs only while theirs wait,
/// and credit never builds up while none do.
#[derive(Default)]
pub(crate) struct Pace {
    /// Deliveries take this lock, so that a message's number is its place
    /// among the exports' messages in the mailbox.
    waits: Mutex<Waits>,
    /// Messages the exports handed to the actor (written under `waits`).
    delivered: AtomicU64,
    /// Messages the actor has handled, counted as above.
    handled: AtomicU64,
    /// The smallest number a tracked delivery waits for; 0 (nothing
    /// delivered has that number) when none waits.
    wake_at: AtomicU64,
}

#[derive(Default)]
struct Waits {
    /// Tracked deliveries by number, ascending; each is told once handled.
    queue: VecDeque<(u64, oneshot::Sender<()>)>,
    /// The actor's task ended: nothing more will be handled.
    closed: bool,
}

impl Pace {
    fn lock(&self) -> MutexGuard<'_, Waits> {
        self.waits.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Hands `msg` to the actor with `cast`, counted.
    pub(crate) fn deliver<M>(&self, msg: M, cast: impl FnOnce(M) -> Result<(), M>) -> Result<(), M> {
        self.deliver_inner(msg, None, cast)
    }

    /// Hands `msg` to the actor with `cast`; the receiver resolves once the
    /// actor has handled it, or errs once the actor's task ended.
    pub(crate) fn deliver_tracked<M>(
        &self,
        msg: M,
        cast: impl FnOnce(M) -> Result<(), M>,
    ) -> Result<oneshot::Receiver<()>, M> {
        let (tx, rx) = oneshot::channel();
        self.deliver_inner(msg, Some(tx), cast).map(|()| rx)
    }

    fn deliver_inner<M>(
        &self,
        msg: M,
        done: Option<oneshot::Sender<()>>,
        cast: impl FnOnce(M) -> Result<(), M>,
    ) -> Result<(), M> {
        let mut waits = self.lock();
        if waits.closed {
            return Err(msg);
        }
        let n = self.delivered.load(SeqCst) + 1;
        if let Some(done) = done {
            // Before `delivered` shows `n`: once the actor can count up to
            // `n`, it must also see that `n` is waited for.
            if waits.queue.is_empty() {
                self.wake_at.store(n, SeqCst);
            }
            waits.queue.push_back((n, done));
        }
        self.delivered.store(n, SeqCst);
        // On failure the actor is draining or stopping, which ractor never
        // undoes: nothing will be delivered after this, so the count and the
        // wait, released when the task ends, need no undoing.
        cast(msg)
    }

    /// One message handled; called by the actor only, one at a time.
    fn handled(&self) {
        let delivered = self.delivered.load(SeqCst);
        let Ok(before) = self.handled.fetch_update(SeqCst, SeqCst, |h| (h < delivered).then_some(h + 1)) else {
            return;
        };
        let wake_at = self.wake_at.load(SeqCst);
        if wake_at != 0 && before + 1 >= wake_at {
            let mut waits = self.lock();
            while waits.queue.front().is_some_and(|(n, _)| *n <= before + 1) {
                if let Some((_, done)) = waits.queue.pop_front() {
                    // The pump may have given up waiting.
                    let _ = done.send(());
                }
            }
            self.wake_at.store(waits.queue.front().map_or(0, |(n, _)| *n), SeqCst);
        }
    }

    /// The actor's task ended: every wait ends (its sender dropped).
    fn close(&self) {
        let mut waits = self.lock();
        waits.closed = true;
        waits.queue.clear();
        self.wake_at.store(0, SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU64;
    use std::time::Duration;

    use ractor::{MessagingErr, RpcReplyPort};
    use tokio::sync::Notify;

    use super::*;

    #[derive(Debug)]
    enum Msg {
        /// Blocks until the gate opens.
        Wait,
        Tick,
        Ticks(RpcReplyPort<u64>),
    }

    struct Gated {
        /// Notified when the actor starts waiting.
        waiting: Arc<Notify>,
        gate: Arc<Notify>,
        ticks: Arc<AtomicU64>,
    }

    impl Actor for Gated {
        type Msg = Msg;
        type State = ();
        type Arguments = ();

        async fn pre_start(&self, _: ActorRef<Msg>, _: ()) -> Result<(), ActorProcessingErr> {
            Ok(())
        }

        async fn handle(&self, _: ActorRef<Msg>, msg: Msg, _: &mut ()) -> Result<(), ActorProcessingErr> {
            match msg {
                Msg::Wait => {
                    self.waiting.notify_one();
                    self.gate.notified().await
                }
                Msg::Tick => {
                    self.ticks.fetch_add(1, SeqCst);
                }
                Msg::Ticks(reply) => {
                    let _ = reply.send(self.ticks.load(SeqCst));
                }
            }
            Ok(())
        }
    }

    struct Test {
        actor: Paced<Msg>,
        waiting: Arc<Notify>,
        gate: Arc<Notify>,
        ticks: Arc<AtomicU64>,
    }

    async fn gated() -> Test {
        let (waiting, gate) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
        let ticks = Arc::new(AtomicU64::new(0));
        let handler = Gated { waiting: waiting.clone(), gate: gate.clone(), ticks: ticks.clone() };
        let (actor, _) = Paced::spawn(None, handler, ()).await.unwrap();
        Test { actor, waiting, gate, ticks }
    }

    /// As the export casts (without its handling of the `cluster` errors).
    fn cast(actor: &ActorRef<Msg>) -> impl FnOnce(Msg) -> Result<(), Msg> + '_ {
        |msg| {
            actor.cast(msg).map_err(|e| match e {
                MessagingErr::SendErr(msg) => msg,
                other => panic!("{other:?}"),
            })
        }
    }

    const BOUND: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn a_tracked_delivery_resolves_once_its_message_is_handled_not_before() {
        let Test { actor, gate, ticks, .. } = gated().await;
        let pace = &actor.pace;
        pace.deliver(Msg::Wait, cast(&actor)).unwrap();
        for _ in 0..3 {
            pace.deliver(Msg::Tick, cast(&actor)).unwrap();
        }
        let mut handled = pace.deliver_tracked(Msg::Tick, cast(&actor)).unwrap();
        // The actor is stuck on `Wait`, ahead of the tracked tick.
        assert!(handled.try_recv().is_err(), "resolved while its message waits");

        gate.notify_one();
        tokio::time::timeout(BOUND, handled).await.unwrap().unwrap();
        assert_eq!(ticks.load(SeqCst), 4, "resolved once the ticks ahead and its own were handled");
    }

    #[tokio::test]
    async fn a_tracked_delivery_resolves_when_the_actor_is_killed_first() {
        let Test { actor, ticks, .. } = gated().await;
        let pace = actor.pace.clone();
        pace.deliver(Msg::Wait, cast(&actor)).unwrap();
        let handled = pace.deliver_tracked(Msg::Tick, cast(&actor)).unwrap();

        actor.kill();
        let outcome = tokio::time::timeout(BOUND, handled).await.expect("the wait outlived the actor");
        assert!(outcome.is_err(), "told the actor is gone, not that the tick was handled");
        assert_eq!(ticks.load(SeqCst), 0);
        assert!(pace.deliver(Msg::Tick, cast(&actor)).is_err(), "a delivery after the end is refused");
    }

    /// Messages from around the export (timers, local casts) handled while
    /// none of the export's wait must not let later ones in early.
    #[tokio::test]
    async fn messages_handled_while_none_of_the_exports_wait_earn_no_credit() {
        let Test { actor, waiting, gate, ticks } = gated().await;
        for _ in 0..100 {
            actor.cast(Msg::Tick).unwrap();
        }
        let seen = actor.call(Msg::Ticks, Some(BOUND)).await.unwrap().success_or(()).unwrap();
        assert_eq!(seen, 100);

        let pace = &actor.pace;
        pace.deliver(Msg::Tick, cast(&actor)).unwrap();
        pace.deliver(Msg::Wait, cast(&actor)).unwrap();
        let mut handled = pace.deliver_tracked(Msg::Tick, cast(&actor)).unwrap();
        // The first tick is counted before `Wait` starts; 101 handled
        // messages would cover the tracked one, numbered 3.
        tokio::time::timeout(BOUND, waiting.notified()).await.unwrap();
        assert!(handled.try_recv().is_err(), "resolved on credit from the local ticks");

        gate.notify_one();
        tokio::time::timeout(BOUND, handled).await.unwrap().unwrap();
        assert_eq!(ticks.load(SeqCst), 102);
    }
}
