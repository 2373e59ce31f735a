//! Death watch: a local ractor actor is told when a remote one is gone.

mod common;

use std::time::Duration;

use common::{counter, two_nodes, watcher, within, CounterMsg, WatcherMsg, CALL, T};
use tether::{RemoteError, WatchEvent};
use tether_ractor::{export, lookup, watch, CallError};

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
        assert_eq!(event, Some(WatchEvent::Stopped));

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
        assert_eq!(within(Duration::from_secs(5), events2.recv()).await, Some(WatchEvent::Stopped));
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
