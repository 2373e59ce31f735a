//! Death watch: a local ractor actor is told when a remote one is gone.

mod common;

use std::time::Duration;

use std::sync::Arc;

use common::{counter, forward, two_nodes, watcher, within, Counter, CounterMsg, WatcherMsg, CALL, T};
use ractor::ActorRef;
use tether::{Node, NodeId, RemoteError, WatchEvent};
use tether_ractor::{export, export_paced, lookup, watch, CallError, Paced, RemoteActorRef, RemoteSupervisionEvent};
use tokio::sync::mpsc::UnboundedReceiver;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watcher_is_told_when_the_remote_actor_stops() {
    within(T, async {
        let (a, b, b_id) = two_nodes().await;
        let (actor, _gate) = counter().await;
        export(&b, Some("counter"), actor.clone()).unwrap();
        let remote = lookup::<CounterMsg>(&a, b_id, "counter").await.unwrap();
        let (w, mut events) = watcher().await;
        let _watch = watch(&remote, w, WatcherMsg::Gone);
        // The watch is registered on B before the actor stops.
        assert_eq!(remote.ask(CounterMsg::Get, CALL).await.unwrap(), 0);

        actor.stop_and_wait(None, Some(Duration::from_secs(5))).await.unwrap();
        let event = within(Duration::from_secs(5), events.recv()).await;
        assert_eq!(event, Some(WatchEvent::Stopped { reason: None }));

        let err = remote.ask(CounterMsg::Get, CALL).await.unwrap_err();
        assert!(matches!(err, CallError::Unreachable(tether::RemoteError::Stopped)), "{err:?}");
        let err = lookup::<CounterMsg>(&a, b_id, "counter").await.unwrap_err();
        assert_eq!(err, tether::RemoteError::NotFound("counter".into()), "the name went with the actor");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watcher_is_told_when_the_remote_node_is_lost() {
    within(T, async {
        let (a, b, b_id) = two_nodes().await;
        export(&b, Some("counter"), counter().await.0).unwrap();
        let remote = lookup::<CounterMsg>(&a, b_id, "counter").await.unwrap();
        let (w, mut events) = watcher().await;
        let _watch = watch(&remote, w, WatcherMsg::Gone);
        assert_eq!(remote.ask(CounterMsg::Get, CALL).await.unwrap(), 0);

        // B closes its connection to A.
        b.connection(a.id()).unwrap().close().await;
        let event = within(Duration::from_secs(5), events.recv()).await;
        assert_eq!(event, Some(WatchEvent::NodeLost));

        // The core may still say `NoRoute` for a moment: its monitor can fire
        // before the node has marked the peer lost.
        let err = remote.ask(CounterMsg::Get, CALL).await.unwrap_err();
        assert!(
            matches!(err, CallError::Unreachable(RemoteError::NodeLost(id) | RemoteError::NoRoute(id)) if id == b_id),
            "{err:?}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_watch_sends_nothing() {
    within(T, async {
        let (a, b, b_id) = two_nodes().await;
        let (actor, _gate) = counter().await;
        export(&b, Some("counter"), actor.clone()).unwrap();
        let remote = lookup::<CounterMsg>(&a, b_id, "counter").await.unwrap();
        let (w, mut events) = watcher().await;
        watch(&remote, w.clone(), WatcherMsg::Gone).cancel();
        // A second watch shows when the stop has been observed.
        let (w2, mut events2) = watcher().await;
        let _second = watch(&remote, w2, WatcherMsg::Gone);
        assert_eq!(remote.ask(CounterMsg::Get, CALL).await.unwrap(), 0);

        actor.stop_and_wait(None, Some(Duration::from_secs(5))).await.unwrap();
        assert_eq!(within(Duration::from_secs(5), events2.recv()).await, Some(WatchEvent::Stopped { reason: None }));
        // The watcher's mailbox is processed in order: once it has handled a
        // drain (and stopped, dropping its sender), anything the cancelled
        // watch had sent would be out. Nothing was, and nothing can come.
        w.drain_and_wait(Some(Duration::from_secs(5))).await.unwrap();
        let got = events.try_recv();
        assert!(
            matches!(got, Err(tokio::sync::mpsc::error::TryRecvError::Disconnected)),
            "the cancelled watch sent: {got:?}"
        );
    })
    .await;
}

/// How a counter is exported on B.
#[derive(Clone, Copy, Debug)]
enum Exported {
    Plain,
    Paced,
}

/// What A's watchers of a counter on B hear: the bare event and the one
/// shaped like ractor's `SupervisionEvent`.
struct Watched {
    remote: RemoteActorRef<CounterMsg>,
    events: UnboundedReceiver<WatchEvent>,
    supervision: UnboundedReceiver<RemoteSupervisionEvent>,
    /// A monitor on B itself, through the ref `export` returned.
    local: tether::Monitor,
    actor: ActorRef<CounterMsg>,
}

/// A counter on B, exported as `how`, watched from A both ways (and from B);
/// the watches are in place when this returns.
async fn watched_counter(a: &Node, b: &Node, b_id: NodeId, how: Exported) -> Watched {
    let gate = Arc::new(tokio::sync::Notify::new());
    let (actor, local_ref) = match how {
        Exported::Plain => {
            let (actor, _) = ractor::Actor::spawn(None, Counter, gate).await.unwrap();
            let r = export(b, Some("counter"), actor.clone()).unwrap();
            (actor, r)
        }
        Exported::Paced => {
            let (paced, _) = Paced::spawn(None, Counter, gate).await.unwrap();
            let actor = paced.actor_ref().clone();
            (actor, export_paced(b, Some("counter"), paced).unwrap())
        }
    };
    let remote = lookup::<CounterMsg>(a, b_id, "counter").await.unwrap();
    let (w, events) = watcher().await;
    let (s, supervision) = forward::<RemoteSupervisionEvent>().await;
    // Both forms through one function: the variant's type picks the value.
    let _watch = watch(&remote, w, WatcherMsg::Gone);
    let _supervised = watch(&remote, s, |e: RemoteSupervisionEvent| e);
    // The watches are registered on B before anything ends: B answers
    // control messages in order, and `watch` sent them before this lookup.
    assert_eq!(lookup::<CounterMsg>(a, b_id, "counter").await.unwrap(), remote);
    // A monitor watches from its first poll on.
    let mut local = local_ref.monitor();
    assert!(futures::poll!(&mut local).is_pending());
    Watched { remote, events, supervision, local, actor }
}

impl Watched {
    /// Asserts what every watcher heard.
    async fn heard(mut self, event: WatchEvent, supervision: RemoteSupervisionEvent) {
        let bound = Duration::from_secs(5);
        assert_eq!(within(bound, self.events.recv()).await, Some(event.clone()), "the watcher");
        assert_eq!(within(bound, self.supervision.recv()).await, Some(supervision), "the supervision-shaped watcher");
        if event.is_actor_exit() {
            assert_eq!(within(bound, self.local).await, event, "a monitor on the actor's own node");
            // How the actor ended is not kept once its watchers were told.
            let late = within(bound, self.remote.monitor()).await;
            assert_eq!(late, WatchEvent::Stopped { reason: None }, "a monitor made afterwards");
        } else {
            assert_eq!(within(bound, self.remote.monitor()).await, event, "a monitor made afterwards");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_watcher_hears_the_reason_an_actor_was_stopped_with() {
    within(T, async {
        for how in [Exported::Plain, Exported::Paced] {
            let (a, b, b_id) = two_nodes().await;
            let w = watched_counter(&a, &b, b_id, how).await;
            let id = w.remote.id();
            w.actor.stop_and_wait(Some("asked to stop".into()), Some(Duration::from_secs(5))).await.unwrap();
            let reason = Some("asked to stop".to_owned());
            w.heard(
                WatchEvent::Stopped { reason: reason.clone() },
                RemoteSupervisionEvent::ActorTerminated(id, reason),
            )
            .await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_watcher_hears_the_reason_a_handler_stopped_its_actor_with() {
    within(T, async {
        for how in [Exported::Plain, Exported::Paced] {
            let (a, b, b_id) = two_nodes().await;
            let w = watched_counter(&a, &b, b_id, how).await;
            let id = w.remote.id();
            w.remote.send(CounterMsg::StopWith(format!("done ({how:?})"))).await.unwrap();
            let reason = Some(format!("done ({how:?})"));
            w.heard(
                WatchEvent::Stopped { reason: reason.clone() },
                RemoteSupervisionEvent::ActorTerminated(id, reason),
            )
            .await;
        }
    })
    .await;
}

/// A remote watcher of an actor (plain and paced) that `fail` makes fail
/// hears `error`, in both forms.
async fn heard_failure(fail: fn(String) -> CounterMsg, error: &str) {
    for how in [Exported::Plain, Exported::Paced] {
        let (a, b, b_id) = two_nodes().await;
        let w = watched_counter(&a, &b, b_id, how).await;
        let id = w.remote.id();
        w.remote.send(fail(error.to_owned())).await.unwrap();
        let error = error.to_owned();
        w.heard(WatchEvent::Failed { error: error.clone() }, RemoteSupervisionEvent::ActorFailed(id, error)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_watcher_hears_the_error_a_handler_failed_with() {
    within(T, heard_failure(CounterMsg::Fail, "disk full")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_watcher_hears_the_message_a_handler_panicked_with() {
    within(T, heard_failure(CounterMsg::Panic, "worker panicked")).await;
}

/// The text a watcher gets is bounded, however long the panic message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_panic_message_reaches_the_watcher_cut_to_1024_bytes() {
    within(T, async {
        let (a, b, b_id) = two_nodes().await;
        let w = watched_counter(&a, &b, b_id, Exported::Plain).await;
        let id = w.remote.id();
        // Three bytes each: byte 1024 falls inside the 342nd.
        w.remote.send(CounterMsg::Panic("€".repeat(400))).await.unwrap();
        let error = "€".repeat(341);
        w.heard(WatchEvent::Failed { error: error.clone() }, RemoteSupervisionEvent::ActorFailed(id, error)).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_watcher_hears_that_the_node_left_when_it_shuts_down() {
    within(T, async {
        let (a, b, b_id) = two_nodes().await;
        let w = watched_counter(&a, &b, b_id, Exported::Plain).await;
        let id = w.remote.id();
        b.shutdown().await;
        w.heard(WatchEvent::NodeLeft, RemoteSupervisionEvent::NodeLeft(id)).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_watcher_hears_that_the_node_was_lost() {
    within(T, async {
        let (a, b, b_id) = two_nodes().await;
        let w = watched_counter(&a, &b, b_id, Exported::Paced).await;
        let id = w.remote.id();
        b.connection(a.id()).unwrap().close().await;
        w.heard(WatchEvent::NodeLost, RemoteSupervisionEvent::NodeLost(id)).await;
    })
    .await;
}
