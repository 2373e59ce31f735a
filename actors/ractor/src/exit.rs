//! How an exported actor ended, for its watchers: ractor's own account,
//! taken from its supervision events.
//!
//! ractor tells an actor's supervisor how it ended (`ActorTerminated` with
//! the stop reason, `ActorFailed` with the error or panic text), and, with
//! the `monitors` feature, a copy to each actor that monitors it, without
//! linking (the actor's own supervision is untouched). So each node runs one
//! small actor, [`ExitMonitor`], that monitors every actor the node exports
//! and keeps how each ended until its exports ask.
//!
//! Ordering, which makes the answer exact: ractor sends the event to the
//! monitors before it marks the actor `Stopped` (`ActorLifecycleGuard`), and
//! an actor takes supervision events before messages (its ports are polled
//! in priority order). So once the actor's stop notification has fired, a
//! `Settle` sent to the monitor is handled after the event, if there was one.
//! An actor that was already stopping when it was exported may have ended
//! before it was monitored: then nothing is known, and the export reports
//! `Stopped` without a reason.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, ActorStatus, RpcReplyPort, SupervisionEvent};
use tether::{ActorExit, Node};

/// Learns how exported actors end. One per node, spawned with the node's
/// first export; the node owns it (see [`NodeExits`]).
struct ExitMonitor;

pub(crate) enum ExitMsg {
    /// An export asks how the actor ended; its stop notification has fired.
    Settle(ractor::ActorId, RpcReplyPort<Option<ActorExit>>),
}

/// What the node knows of one exported actor.
#[derive(Default)]
struct Watched {
    /// Exports that have not asked yet; the entry goes when none is left.
    exports: usize,
    /// How it ended, once ractor said.
    exit: Option<ActorExit>,
}

/// The node's exported actors, shared by its exports (which count
/// themselves in and out at once, so an entry exists before ractor can
/// report the actor's end) and its monitor (which records the ends of
/// actors with an entry, and hands them out).
type Table = Arc<Mutex<HashMap<ractor::ActorId, Watched>>>;

fn lock(table: &Table) -> std::sync::MutexGuard<'_, HashMap<ractor::ActorId, Watched>> {
    table.lock().unwrap_or_else(|e| e.into_inner())
}

impl Actor for ExitMonitor {
    type Msg = ExitMsg;
    type State = Table;
    type Arguments = Table;

    async fn pre_start(&self, _: ActorRef<ExitMsg>, table: Table) -> Result<Table, ActorProcessingErr> {
        Ok(table)
    }

    async fn handle(&self, _: ActorRef<ExitMsg>, msg: ExitMsg, table: &mut Table) -> Result<(), ActorProcessingErr> {
        let ExitMsg::Settle(id, reply) = msg;
        let mut watched = lock(table);
        let exit = match watched.get_mut(&id) {
            None => None,
            Some(w) => {
                w.exports = w.exports.saturating_sub(1);
                if w.exports == 0 {
                    watched.remove(&id).and_then(|w| w.exit)
                } else {
                    w.exit.clone()
                }
            }
        };
        drop(watched);
        let _ = reply.send(exit);
        Ok(())
    }

    // Not ractor's default, which stops the monitor when a watched actor ends.
    async fn handle_supervisor_evt(
        &self,
        _: ActorRef<ExitMsg>,
        event: SupervisionEvent,
        table: &mut Table,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, exit) = match event {
            SupervisionEvent::ActorTerminated(cell, _, reason) => (cell, ActorExit::Stopped { reason }),
            // A monitor's copy carries the error as text already.
            SupervisionEvent::ActorFailed(cell, error) => (cell, ActorExit::Failed { error: error.to_string() }),
            _ => return Ok(()),
        };
        // Only for actors an export still waits on. (The core cuts the text
        // to 1024 bytes before anyone sees it.)
        if let Some(w) = lock(table).get_mut(&cell.get_id()) {
            w.exit = Some(exit);
        }
        Ok(())
    }
}

/// A node's [`ExitMonitor`] and table; the monitor is stopped when the node
/// goes.
#[derive(Default)]
pub(crate) struct NodeExits {
    monitor: Mutex<Option<ActorRef<ExitMsg>>>,
    table: Table,
}

impl Drop for NodeExits {
    fn drop(&mut self) {
        if let Some(m) = self.monitor.get_mut().unwrap_or_else(|e| e.into_inner()).take() {
            m.stop(None);
        }
    }
}

impl NodeExits {
    /// The monitor, spawned on the current runtime if there is none (or
    /// the one there was ended with its runtime).
    fn monitor(&self) -> ActorRef<ExitMsg> {
        let mut m = self.monitor.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(live) = m.as_ref().filter(|m| m.get_status() < ActorStatus::Stopping) {
            return live.clone();
        }
        // The join handle is not needed: the node's state stops the actor.
        let spawned = match ractor::ActorRuntime::spawn_instant(None, ExitMonitor, self.table.clone()) {
            Ok((actor, _)) => actor,
            Err(_) => unreachable!("an actor without a name is never refused"),
        };
        *m = Some(spawned.clone());
        spawned
    }
}

/// Starts learning how `actor`, exported on `node`, will end; the returned
/// [`Exit`] tells, once it has.
pub(crate) fn watch_exit(node: &Node, actor: ActorCell) -> Exit {
    let exits = node.extension::<NodeExits>();
    let monitor = exits.monitor();
    // Counted before ractor can report the end, so the end is kept.
    lock(&exits.table).entry(actor.get_id()).or_default().exports += 1;
    monitor.get_cell().monitor(actor.clone());
    Exit(Arc::new(ExitOf { actor, monitor, table: exits.table.clone() }))
}

/// How one export learns how its actor ended.
#[derive(Clone)]
pub(crate) struct Exit(Arc<ExitOf>);

struct ExitOf {
    actor: ActorCell,
    monitor: ActorRef<ExitMsg>,
    table: Table,
}

impl Exit {
    /// The export this was for was refused: it will not ask how the actor
    /// ended, so it is counted out (and the actor no longer monitored if
    /// no export is left).
    pub(crate) fn unwatch(&self) {
        let ExitOf { actor, monitor, table } = &*self.0;
        let mut watched = lock(table);
        let Some(w) = watched.get_mut(&actor.get_id()) else { return };
        w.exports = w.exports.saturating_sub(1);
        if w.exports == 0 {
            watched.remove(&actor.get_id());
            drop(watched);
            monitor.get_cell().unmonitor(actor.clone());
        }
    }

    /// Resolves with how the actor ended, once it has; `Stopped` without a
    /// reason if ractor said nothing this node heard.
    pub(crate) fn ended(&self) -> BoxFuture<'static, ActorExit> {
        let this = self.0.clone();
        Box::pin(async move {
            let ExitOf { actor, monitor, .. } = &*this;
            // Every supervision event of the actor was sent before this fires.
            let _ = actor.wait(None).await;
            let id = actor.get_id();
            match monitor.call(|reply| ExitMsg::Settle(id, reply), None).await {
                Ok(ractor::rpc::CallResult::Success(Some(exit))) => exit,
                _ => ActorExit::Stopped { reason: None },
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    struct Idle;

    impl Actor for Idle {
        type Msg = ();
        type State = ();
        type Arguments = ();

        async fn pre_start(&self, _: ActorRef<()>, _: ()) -> Result<(), ActorProcessingErr> {
            Ok(())
        }
    }

    /// The node owns its monitor: it is one for all exports, and it stops
    /// when the node goes, though the exported actors live on.
    #[tokio::test]
    async fn the_monitor_is_shared_by_the_exports_and_stops_with_its_node() {
        let node = Node::new(None, tether::Config::default()).unwrap();
        let (first, _) = Actor::spawn(None, Idle, ()).await.unwrap();
        let (second, _) = Actor::spawn(None, Idle, ()).await.unwrap();
        crate::export(&node, None, first.clone()).unwrap();
        crate::export(&node, None, second.clone()).unwrap();
        let monitor = node.extension::<NodeExits>().monitor();
        assert_eq!(node.extension::<NodeExits>().monitor().get_id(), monitor.get_id(), "one per node");

        drop(node);
        let stopped = monitor.get_cell().wait(Some(Duration::from_secs(5))).await;
        assert!(stopped.is_ok(), "the monitor outlived its node");
        assert_eq!(first.get_status(), ActorStatus::Running);
        assert_eq!(second.get_status(), ActorStatus::Running);
    }

    /// An export refused for a taken name leaves nothing behind in the
    /// node's table, though its actor goes on and ends later.
    #[tokio::test]
    async fn a_refused_export_is_forgotten() {
        let node = Node::new(None, tether::Config::default()).unwrap();
        let (holder, _) = Actor::spawn(None, Idle, ()).await.unwrap();
        crate::export(&node, Some("taken"), holder).unwrap();
        let exits = node.extension::<NodeExits>();
        assert_eq!(lock(&exits.table).len(), 1);

        for _ in 0..10 {
            let (late, handle) = Actor::spawn(None, Idle, ()).await.unwrap();
            assert!(crate::export(&node, Some("taken"), late.clone()).is_err());
            late.stop(None);
            handle.await.unwrap();
        }
        // Ends reported meanwhile are handled before this call is.
        let monitor = exits.monitor();
        let _ = monitor.call(|reply| ExitMsg::Settle(ractor::ActorId::Local(u64::MAX), reply), None).await;
        assert_eq!(lock(&exits.table).len(), 1, "the refused exports' actors are still in the table");
    }
}
