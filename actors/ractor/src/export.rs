//! Exporting a local ractor actor: its `ActorRef` as a tether mailbox.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use ractor::{ActorCell, ActorRef, ActorStatus, MessagingErr};
use tether::{ActorExit, Mailbox, NameTaken, Node, RemoteMessage, RemoteRef};

use crate::exit::{watch_exit, Exit};

use crate::pace::Pace;
use crate::Paced;

/// Hands `msg` to the actor's mailbox; gives it back if the actor is gone.
fn cast<M: ractor::Message>(actor: &ActorRef<M>, msg: M) -> Result<(), M> {
    match actor.cast(msg) {
        Ok(()) => Ok(()),
        // The actor is draining, stopping or stopped.
        Err(MessagingErr::SendErr(msg)) => Err(msg),
        // A typed local `ActorRef` never reports these without the
        // `cluster` feature (`InvalidActorType` needs a mistyped cell,
        // `ChannelClosed` is a receive-side error), and neither carries
        // the message, so there is nothing to hand back. The actor's
        // stop notification still fires and unregisters the export.
        Err(MessagingErr::ChannelClosed | MessagingErr::InvalidActorType) => Ok(()),
    }
}

/// Resolves once the actor has stopped: ractor's stop notification (a
/// `Notify` fired once the status becomes `Stopped`, with a permit kept for
/// late waiters), so no polling.
fn stopped<M>(actor: &ActorRef<M>) -> BoxFuture<'static, ()> {
    let cell = actor.get_cell();
    Box::pin(async move {
        let _ = cell.wait(None).await;
    })
}

/// A local ractor actor seen by the node as a mailbox it cannot pace.
struct ActorMailbox<M> {
    actor: ActorRef<M>,
    exit: Exit,
}

impl<M: ractor::Message + RemoteMessage> Mailbox<M> for ActorMailbox<M> {
    fn deliver(&self, msg: M) -> Result<(), M> {
        cast(&self.actor, msg)
    }

    fn stopped(&self) -> BoxFuture<'static, ()> {
        stopped(&self.actor)
    }

    fn exit(&self) -> BoxFuture<'static, ActorExit> {
        self.exit.ended()
    }
}

/// A [`Paced`] actor seen by the node: it can tell when a message was
/// handled, so the node paces deliveries to it.
struct PacedMailbox<M> {
    actor: ActorRef<M>,
    pace: Arc<Pace>,
    exit: Exit,
}

impl<M: ractor::Message + RemoteMessage> Mailbox<M> for PacedMailbox<M> {
    fn deliver(&self, msg: M) -> Result<(), M> {
        self.pace.deliver(msg, |msg| cast(&self.actor, msg))
    }

    // The wait needs no polling to progress: the actor's count wakes it,
    // and the end of the actor's task ends it (the sender is dropped).
    fn deliver_tracked(&self, msg: M) -> Result<Option<BoxFuture<'static, ()>>, M> {
        let handled = self.pace.deliver_tracked(msg, |msg| cast(&self.actor, msg))?;
        Ok(Some(Box::pin(async move {
            let _ = handled.await;
        })))
    }

    fn stopped(&self) -> BoxFuture<'static, ()> {
        stopped(&self.actor)
    }

    fn exit(&self) -> BoxFuture<'static, ActorExit> {
        self.exit.ended()
    }
}

/// Makes a local ractor actor reachable from peers of `node`, under `name`
/// if one is given (peers find named actors with [`lookup`](crate::lookup)),
/// **without pacing**: use [`export_paced`] for an actor that may fall
/// behind its senders.
///
/// Messages from peers are handed to the actor with `cast`, in the order each
/// sender sent them, as fast as they arrive: ractor cannot tell when a plain
/// actor handled a message, so its mailbox, which ractor does not bound,
/// takes whatever its senders send, and they never wait for it.
///
/// When the actor ends, the export and its name are removed and monitors of
/// the returned ref report how, as ractor tells a supervisor:
/// [`WatchEvent::Stopped`](tether::WatchEvent::Stopped) with the reason
/// given to `stop` (ractor's `ActorTerminated`; `"killed"` after `kill`),
/// or [`WatchEvent::Failed`](tether::WatchEvent::Failed) with the error a
/// handler returned or its panic message (`ActorFailed`). The node learns
/// this by monitoring the actor (ractor's `monitors` feature), which leaves
/// its supervision as it was.
///
/// The returned [`RemoteRef`] addresses the actor from anywhere; wrap it with
/// [`RemoteActorRef::from`](crate::RemoteActorRef) to send it inside
/// messages in ractor's idiom. Must be called within a tokio runtime.
///
/// # Errors
///
/// [`NameTaken`] if another actor is already exported under `name` on this
/// node.
///
/// Each call makes a new export (with its own id) of the actor. The first
/// one, by this function or [`export_paced`], is also the one
/// [`registry::register`](crate::registry::register) and
/// [`pg::join`](crate::pg::join) use for it.
pub fn export<M>(node: &Node, name: Option<&str>, actor: ActorRef<M>) -> Result<RemoteRef<M>, NameTaken>
where
    M: ractor::Message + RemoteMessage,
{
    let cell = actor.get_cell();
    let exit = watch_exit(node, cell.clone());
    let remote = node.export(name, ActorMailbox { actor, exit: exit.clone() }).inspect_err(|_| exit.unwatch())?;
    remember(node, cell, &remote);
    Ok(remote)
}

/// Makes an actor spawned with [`Paced::spawn`] reachable from peers of
/// `node`, like [`export`], and has it push back on its senders.
///
/// Messages are handed to the actor with `cast`, in the order each sender
/// sent them, but no faster than the actor handles them: fewer than 512 of
/// one route's messages (those sent through one node's handles to the
/// actor) are in its mailbox at once, and about 512 KiB of their encodings
/// at most, plus one message. While the actor is that far behind, the node
/// reads no more from the route, its window fills, and the senders wait:
/// [`send`](crate::RemoteActorRef::send) waits and
/// [`cast`](crate::RemoteActorRef::cast) fails with
/// [`TellError::Full`](tether::TellError::Full). Sends from `node` itself
/// (through the returned ref) are paced the same way. Nothing is dropped:
/// once the actor catches up, every message arrives, once, in order.
///
/// The bound counts messages, and ractor does not say which message a
/// handler got: the actor counts every one it handles. A message that
/// reaches it around tether (a `cast` on its `ActorRef`, a ractor timer, an
/// [`export`] of the same `ActorRef`) is not paced, and each one the actor
/// handles while tether's messages wait lets one more of theirs in.
///
/// Two consequences of pacing, as for every tether adapter (see
/// [`tether::Mailbox::deliver_tracked`]): a handler that waits for a message
/// sent more than 255 messages after its own on the same route waits
/// forever; and a route held up here holds up to `Config::port_window` of
/// its connection's window, so once `conn_window / port_window` routes (8 by
/// default) of one connection wait at once, its other ports stall too.
///
/// When the actor ends, every wait ends, the export and its name are
/// removed and monitors of the returned ref report how, as for [`export`]:
/// [`WatchEvent::Stopped`](tether::WatchEvent::Stopped) with the stop
/// reason, or [`WatchEvent::Failed`](tether::WatchEvent::Failed) with the
/// error. Must be called within a tokio runtime.
///
/// # Errors
///
/// [`NameTaken`] if another actor is already exported under `name` on this
/// node.
pub fn export_paced<M>(node: &Node, name: Option<&str>, actor: Paced<M>) -> Result<RemoteRef<M>, NameTaken>
where
    M: ractor::Message + RemoteMessage,
{
    let (actor, pace) = actor.into_parts();
    let cell = actor.get_cell();
    let exit = watch_exit(node, cell.clone());
    let remote = node.export(name, PacedMailbox { actor, pace, exit: exit.clone() }).inspect_err(|_| exit.unwatch())?;
    remember(node, cell, &remote);
    Ok(remote)
}

/// The actor's export on `node` for messages of type `M`: the first one
/// made (by [`export`], [`export_paced`] or here) while the actor runs,
/// else a new one, unpaced and without a name. So joining groups and
/// claiming names for one `ActorRef` give one actor id, and a broadcast to
/// a group it joined twice reaches it once. An actor spawned with
/// [`Paced::spawn`] and exported with [`export_paced`] first stays paced.
pub(crate) fn export_once<M>(node: &Node, actor: &ActorRef<M>) -> RemoteRef<M>
where
    M: ractor::Message + RemoteMessage,
{
    if let Some(found) = find_export(node, actor) {
        return found;
    }
    let remote = match export(node, None, actor.clone()) {
        Ok(r) => r,
        Err(_) => unreachable!("an export without a name is never refused"),
    };
    // Two callers may both get here for one actor: the first remembered
    // wins, and the other export stays unused (it ends with the actor).
    find_export(node, actor).unwrap_or(remote)
}

/// The export [`export_once`] would give, if there is one.
pub(crate) fn find_export<M>(node: &Node, actor: &ActorRef<M>) -> Option<RemoteRef<M>>
where
    M: ractor::Message + RemoteMessage,
{
    let key = (actor.get_id(), TypeId::of::<M>());
    let state = node_state(node);
    let mut exported = state.exported.lock().unwrap_or_else(|e| e.into_inner());
    let (cell, remote) = exported.by_actor.get(&key)?;
    if has_stopped(cell) {
        exported.by_actor.remove(&key);
        return None;
    }
    remote.downcast_ref::<RemoteRef<M>>().cloned()
}

/// Keeps `remote` as the actor's export, unless it has a live one.
fn remember<M: RemoteMessage>(node: &Node, cell: ActorCell, remote: &RemoteRef<M>) {
    let key = (cell.get_id(), TypeId::of::<M>());
    let state = node_state(node);
    let mut exported = state.exported.lock().unwrap_or_else(|e| e.into_inner());
    if exported.by_actor.get(&key).is_some_and(|(cell, _)| !has_stopped(cell)) {
        return;
    }
    exported.by_actor.insert(key, (cell, Box::new(remote.clone())));
    if exported.by_actor.len() >= 2 * exported.swept.max(8) {
        exported.by_actor.retain(|_, (cell, _)| !has_stopped(cell));
        exported.swept = exported.by_actor.len();
    }
}

fn has_stopped(cell: &ActorCell) -> bool {
    cell.get_status() >= ActorStatus::Stopping
}

/// This crate's state for one node: its actors' exports, by actor and
/// message type (see [`export_once`]).
///
/// The node owns it ([`Node::extension`]), so it goes with the node.
#[derive(Default)]
struct NodeState {
    exported: Mutex<Exported>,
}

/// An actor's export: its cell (to tell whether it still runs) and its
/// `RemoteRef<M>`.
type Export = (ActorCell, Box<dyn Any + Send>);

#[derive(Default)]
struct Exported {
    by_actor: HashMap<(ractor::ActorId, TypeId), Export>,
    /// The size after the last sweep of stopped actors.
    swept: usize,
}

fn node_state(node: &Node) -> Arc<NodeState> {
    node.extension::<NodeState>()
}
