//! Exporting an actix actor: its `Addr` as a tether mailbox.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::dev::ToEnvelope;
use actix::{Actor, Addr, Handler, Message};
use futures::future::{self, BoxFuture, Either};
use tether::{Mailbox, NameTaken, Node, RemoteMessage};
use tokio::runtime::Handle;
use tokio::sync::Notify;

use crate::envelope::{Envelope, Kind, Reply};
use crate::RemoteAddr;

/// How often an export checks whether its actor has stopped. actix has no
/// notification for "the mailbox closed" that a holder of an `Addr` can
/// await (its parked-sender wake-ups reach only senders blocked on a full
/// mailbox), so this is a poll of one atomic load; a failed delivery wakes
/// it at once.
const STOP_POLL: Duration = Duration::from_millis(100);

/// Makes an actix actor reachable from other nodes, by name if `name` is
/// given, for messages of type `M`.
///
/// The export holds a strong [`Addr`], like any other holder of one: the
/// actor stays alive until it stops itself (`ctx.stop()`), and then the
/// export is removed and every watcher is told [`WatchEvent::Stopped`]
/// without a reason: actix has no stop reason, and gives a holder of an
/// `Addr` no way to tell a stop from a handler's panic (which ends the
/// actor too, and is reported the same). Must be called within a tokio
/// runtime (an actix `System` is one).
///
/// The returned handle is the actor's remote address; send it to peers
/// inside any message, or let them find it with [`lookup`](crate::lookup).
///
/// The first export of an actor for `M` on a node is also the one
/// [`register`](crate::register) and [`join_group`](crate::join_group) use
/// for it (they export it themselves if needed), so its names and group
/// memberships all carry one actor id.
///
/// [`WatchEvent::Stopped`]: tether::WatchEvent::Stopped
pub fn export<A, M>(node: &Node, name: Option<&str>, addr: Addr<A>) -> Result<RemoteAddr<M>, NameTaken>
where
    A: Actor + Handler<M>,
    A::Context: ToEnvelope<A, M>,
    M: Message + RemoteMessage,
    M::Result: RemoteMessage,
{
    // With the one route of every type too: so any ref to the actor,
    // decoded as a `RemoteActor`, reaches it.
    let actor = crate::ActorExport::new(node, name, addr.clone()).handles::<M>().finish()?;
    let remote = match actor.addr::<M>() {
        Ok(remote) => remote,
        Err(e) => unreachable!("exported for M just now, on a live node: {e}"),
    };
    Exported::<A, M>::with(node, |e| e.remember(addr, &remote));
    Ok(remote)
}

/// The actor's export on `node` for messages of type `M`: the first one
/// made (by [`export`] or here) while the actor runs, else a new one without
/// a name. So joining groups and claiming names for one `Addr` give one
/// actor id, and a broadcast to a group it joined twice reaches it once.
pub(crate) fn export_once<A, M>(node: &Node, addr: Addr<A>) -> RemoteAddr<M>
where
    A: Actor + Handler<M>,
    A::Context: ToEnvelope<A, M>,
    M: Message + RemoteMessage,
    M::Result: RemoteMessage,
{
    if let Some(found) = Exported::<A, M>::with(node, |e| e.get(&addr)) {
        return found;
    }
    // Two callers may both get here for one actor: the first remembered wins
    // and the other export stays unused (it ends with the actor).
    let remote = match export(node, None, addr.clone()) {
        Ok(r) => r,
        Err(_) => unreachable!("an export without a name is never refused"),
    };
    Exported::<A, M>::with(node, |e| e.get(&addr)).unwrap_or(remote)
}

/// The export [`export_once`] would give, if there is one.
pub(crate) fn find_export<A, M>(node: &Node, addr: &Addr<A>) -> Option<RemoteAddr<M>>
where
    A: Actor,
    M: Message + RemoteMessage,
    M::Result: RemoteMessage,
{
    Exported::<A, M>::with(node, |e| e.get(addr))
}

/// This crate's state for one node: its actors' exports, by actor and
/// message type (see [`export_once`]).
///
/// The node owns it ([`Node::extension`]), so it goes with the node, and
/// with it the `Addr`s it holds (actix stops an actor once none is left).
#[derive(Default)]
struct NodeState {
    exported: Mutex<HashMap<TypeId, Box<dyn Any + Send>>>,
}

fn node_state(node: &Node) -> Arc<NodeState> {
    node.extension::<NodeState>()
}

/// One node's exports of actors of type `A` for messages `M`. An entry
/// holds the actor's `Addr`, as its export does, until the actor stops;
/// entries of stopped actors are dropped whenever the map doubles.
struct Exported<A: Actor, M: Message> {
    by_addr: HashMap<Addr<A>, RemoteAddr<M>>,
    /// The size after the last sweep of stopped actors.
    swept: usize,
}

impl<A, M> Exported<A, M>
where
    A: Actor,
    M: Message + RemoteMessage,
    M::Result: RemoteMessage,
{
    fn with<R>(node: &Node, f: impl FnOnce(&mut Self) -> R) -> R {
        let state = node_state(node);
        let mut all = state.exported.lock().unwrap_or_else(|e| e.into_inner());
        let entry = all
            .entry(TypeId::of::<(A, M)>())
            .or_insert_with(|| Box::new(Exported::<A, M> { by_addr: HashMap::new(), swept: 0 }));
        f(entry.downcast_mut::<Self>().expect("keyed by type"))
    }

    fn get(&mut self, addr: &Addr<A>) -> Option<RemoteAddr<M>> {
        match self.by_addr.get(addr) {
            Some(r) if addr.connected() => Some(r.clone()),
            Some(_) => {
                self.by_addr.remove(addr);
                None
            }
            None => None,
        }
    }

    fn remember(&mut self, addr: Addr<A>, remote: &RemoteAddr<M>) {
        if self.get(&addr).is_some() {
            return;
        }
        self.by_addr.insert(addr, remote.clone());
        if self.by_addr.len() >= 2 * self.swept.max(8) {
            self.by_addr.retain(|a, _| a.connected());
            self.swept = self.by_addr.len();
        }
    }
}

/// An actor's `Addr` seen as a tether mailbox.
pub(crate) struct AddrMailbox<A: Actor, M> {
    addr: Addr<A>,
    /// Where reply tasks run when `deliver` is called outside a runtime
    /// (a local tell from a plain thread).
    rt: Handle,
    /// Woken when a delivery finds the actor gone.
    stopped: Arc<Notify>,
    _m: PhantomData<fn(M)>,
}

impl<A: Actor, M> AddrMailbox<A, M> {
    /// A mailbox for messages `M` to `addr`; `stopped` is woken when a
    /// delivery finds the actor gone (shared by the mailboxes of one
    /// export). Must be called within a tokio runtime.
    pub(crate) fn new(addr: Addr<A>, stopped: Arc<Notify>) -> Self {
        AddrMailbox { addr, rt: Handle::current(), stopped, _m: PhantomData }
    }

    /// Whether the actor has stopped; if so, its export learns it at once.
    fn gone(&self) -> bool {
        let gone = !self.addr.connected();
        if gone {
            self.stopped.notify_one();
        }
        gone
    }

    fn spawn(&self, fut: impl std::future::Future<Output = ()> + Send + 'static) {
        match Handle::try_current() {
            Ok(rt) => rt.spawn(fut),
            Err(_) => self.rt.spawn(fut),
        };
    }
}

impl<A, M> AddrMailbox<A, M>
where
    A: Actor + Handler<M>,
    A::Context: ToEnvelope<A, M>,
    M: Message + RemoteMessage,
    M::Result: RemoteMessage,
{
    /// Hands a request to the actor and its result to `reply`; `done` (if
    /// any) is dropped once that is over.
    fn ask(
        &self,
        msg: M,
        reply: tether::oneshot::Sender<Reply<M::Result>>,
        done: Option<tokio::sync::oneshot::Sender<()>>,
    ) {
        if reply.is_closed() {
            // The asker gave up before delivery: skip the work.
            return;
        }
        let handled = self.addr.clone().send(msg);
        self.spawn(async move {
            // Dropping `handled` early makes actix skip the handler if it
            // has not started (its envelope checks whether the response
            // channel is closed before handling).
            let outcome = {
                let handled = std::pin::pin!(handled);
                let gone = std::pin::pin!(reply.closed());
                match future::select(handled, gone).await {
                    Either::Left((outcome, _)) => Some(outcome),
                    Either::Right(_) => None,
                }
            };
            // `Err(Closed)`: the actor stopped first; dropping `reply` tells
            // the asker at once.
            if let Some(Ok(result)) = outcome {
                if let Err((Some(reply), error)) = reply.send_or_keep(Ok(result)) {
                    // Not carried back: the asker hears why, not that the
                    // actor stopped.
                    tracing::warn!(%error, "the result of a remote send could not be sent back");
                    let _ = reply.send(Err(error.to_string()));
                }
            }
            drop(done);
        });
    }
}

impl<A, M> crate::any_msg::ActorState for AddrMailbox<A, M>
where
    A: Actor + Handler<M>,
    A::Context: ToEnvelope<A, M>,
    M: Message + RemoteMessage,
    M::Result: RemoteMessage,
{
    fn gone(&self) -> bool {
        AddrMailbox::gone(self)
    }

    fn stopped(&self) -> BoxFuture<'static, ()> {
        Mailbox::stopped(self)
    }

    fn exit(&self) -> BoxFuture<'static, tether::ActorExit> {
        Mailbox::exit(self)
    }
}

impl<A, M> Mailbox<Envelope<M>> for AddrMailbox<A, M>
where
    A: Actor + Handler<M>,
    A::Context: ToEnvelope<A, M>,
    M: Message + RemoteMessage,
    M::Result: RemoteMessage,
{
    // Order: `do_send` and `send` both push into actix's queue before they
    // return (`AddressSender::send` enqueues at once unless *that* sender is
    // parked; a fresh clone never is), so messages enter the actor's
    // mailbox in the order they are delivered here. A parked sender would
    // defer its message to the first poll of the `Request`, behind later
    // `do_send`s, and actix never wakes such a `Request`; hence the clone.
    fn deliver(&self, env: Envelope<M>) -> Result<(), Envelope<M>> {
        if self.gone() {
            return Err(env);
        }
        match env.0 {
            Kind::Tell { msg } => self.addr.do_send(msg),
            Kind::Send { msg, reply } => self.ask(msg, reply, None),
        }
        Ok(())
    }

    // A tell is tracked by sending it with `send` instead of `do_send`: its
    // `Request` resolves once the handler ran, or with an error once the
    // actor stopped. actix skips the handler of a message whose `Request`
    // was dropped, so a task of its own awaits it, not the caller. An ask is
    // over once it was answered or its asker gave up.
    fn deliver_tracked(&self, env: Envelope<M>) -> Result<Option<BoxFuture<'static, ()>>, Envelope<M>> {
        if self.gone() {
            return Err(env);
        }
        let (done, finished) = tokio::sync::oneshot::channel::<()>();
        match env.0 {
            Kind::Tell { msg } => {
                let handled = self.addr.clone().send(msg);
                self.spawn(async move {
                    let _ = handled.await;
                    drop(done);
                });
            }
            Kind::Send { msg, reply } => self.ask(msg, reply, Some(done)),
        }
        Ok(Some(Box::pin(async move {
            let _ = finished.await;
        })))
    }

    fn stopped(&self) -> BoxFuture<'static, ()> {
        let addr = self.addr.downgrade();
        let woken = self.stopped.clone();
        Box::pin(async move {
            while addr.upgrade().is_some() {
                let _ = tokio::time::timeout(STOP_POLL, woken.notified()).await;
            }
        })
    }
}
