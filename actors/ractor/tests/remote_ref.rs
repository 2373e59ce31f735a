//! Export, lookup, cast, send and call between two (or three) nodes over
//! TCP on 127.0.0.1, with real ractor actors.

mod common;

use std::time::{Duration, Instant};

use common::{counter, two_nodes, within, CounterMsg, CALL, T};
use tether::{Config, Node, RemoteError, TellError};
use tether_ractor::{export, lookup, CallError, RemoteActorRef};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn casts_and_sends_arrive_in_order_before_a_call() {
    within(T, async {
        let (a, b, b_id) = two_nodes().await;
        let (actor, _gate) = counter().await;
        let exported = export(&b, Some("counter"), actor).unwrap();
        let remote = lookup::<CounterMsg>(&a, b_id, "counter").await.unwrap();
        assert_eq!(remote, RemoteActorRef::from(exported), "refs to one actor are equal on every node");

        let mut waited = 0;
        for i in 0..10_000 {
            // `cast` never waits; when the window is full, `send` waits for room.
            match remote.try_cast(CounterMsg::Add(i)) {
                Ok(()) => {}
                Err(TellError::Full(msg)) => {
                    waited += 1;
                    remote.send(msg).await.unwrap();
                }
                Err(e) => panic!("cast {i} failed: {e:?}"),
            }
        }
        let total = remote.ask(CounterMsg::Get, CALL).await.unwrap();
        assert_eq!(total, (0..10_000).sum::<u64>(), "all 10,000 arrived before the call ({waited} waited)");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_returns_the_reply() {
    within(T, async {
        let (a, b, b_id) = two_nodes().await;
        export(&b, Some("counter"), counter().await.0).unwrap();
        let remote = lookup::<CounterMsg>(&a, b_id, "counter").await.unwrap();
        let echo = remote.ask(|reply| CounterMsg::Echo("hello".into(), reply), CALL).await.unwrap();
        assert_eq!(echo, "hello");
        remote.send(CounterMsg::Add(41)).await.unwrap();
        remote.cast(CounterMsg::Add(1)).unwrap();
        assert_eq!(remote.ask(CounterMsg::Get, CALL).await.unwrap(), 42);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_times_out_when_the_handler_keeps_the_port() {
    within(T, async {
        let (a, b, b_id) = two_nodes().await;
        export(&b, Some("counter"), counter().await.0).unwrap();
        let remote = lookup::<CounterMsg>(&a, b_id, "counter").await.unwrap();
        let limit = Duration::from_millis(200);
        let started = Instant::now();
        let err = remote.ask(CounterMsg::Hold, limit).await.unwrap_err();
        assert!(matches!(err, CallError::Timeout(t) if t == limit), "{err:?}");
        assert!(err.is_timeout());
        // It waited out its limit, and gave up then: a second of slack for
        // a loaded machine, far below anything else that could end it (the
        // connection's idle timeout, the test's bound).
        let waited = started.elapsed();
        assert!(waited >= limit, "gave up after {waited:?}");
        assert!(waited < limit + Duration::from_secs(1), "gave up only after {waited:?}");
        // The actor is still there.
        assert_eq!(remote.ask(CounterMsg::Get, CALL).await.unwrap(), 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_reply_port_fails_the_call_with_no_reply() {
    within(T, async {
        let (a, b, b_id) = two_nodes().await;
        export(&b, Some("counter"), counter().await.0).unwrap();
        let remote = lookup::<CounterMsg>(&a, b_id, "counter").await.unwrap();
        // `NoReply`, not `Timeout`: the call ended because the port was
        // dropped, before its limit (longer than the test's bound).
        let err = remote.ask(CounterMsg::Ignore, 2 * T).await.unwrap_err();
        assert!(matches!(err, CallError::NoReply), "{err:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_errors_are_typed() {
    within(T, async {
        let (a, b, b_id) = two_nodes().await;
        export(&b, Some("counter"), counter().await.0).unwrap();
        let taken = export(&b, Some("counter"), counter().await.0).unwrap_err();
        assert_eq!(taken, tether::NameTaken("counter".into()));

        match lookup::<String>(&a, b_id, "counter").await.unwrap_err() {
            RemoteError::TypeMismatch { expected, found } => {
                assert_eq!(expected, "String");
                assert!(found.starts_with("CounterMsg{Add|Bulk|Get|"), "{found}");
            }
            other => panic!("expected a type mismatch, got {other:?}"),
        }
        let err = lookup::<CounterMsg>(&a, b_id, "nobody").await.unwrap_err();
        assert_eq!(err, RemoteError::NotFound("nobody".into()));
    })
    .await;
}

/// A sends B's counter, inside a message, to an actor on C; C has no
/// connection to B, calls the counter through A, and answers A.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ref_inside_a_message_reaches_its_actor_from_a_third_node() {
    within(T, async {
        let a = Node::new(Some("a"), Config::default()).unwrap();
        let b = Node::new(Some("b"), Config::default()).unwrap();
        let c = Node::new(Some("c"), Config::default()).unwrap();
        // A dials both: `connect` returns once the dialing side has the peer
        // (the accepting side attaches it a moment later).
        let b_id = a.connect(&b.listen("127.0.0.1:0").await.unwrap().to_string()).await.unwrap();
        let c_id = a.connect(&c.listen("127.0.0.1:0").await.unwrap().to_string()).await.unwrap();

        export(&b, Some("counter"), counter().await.0).unwrap();
        export(&c, Some("relay"), counter().await.0).unwrap();
        let b_counter = lookup::<CounterMsg>(&a, b_id, "counter").await.unwrap();
        b_counter.send(CounterMsg::Add(7)).await.unwrap();
        // Order is kept per sender only: make sure A's add has landed before
        // C's call (another sender, on another route) looks.
        assert_eq!(b_counter.ask(CounterMsg::Get, CALL).await.unwrap(), 7);

        let relay = lookup::<CounterMsg>(&a, c_id, "relay").await.unwrap();
        let seen = relay.ask(|reply| CounterMsg::AskOther(b_counter.clone(), reply), CALL).await.unwrap();
        assert_eq!(seen, 7, "C's actor called B's counter");
        assert_eq!(c.peers(), vec![a.id()], "C never connected to B");
    })
    .await;
}

/// Whatever the receiving side does (an unpaced export takes everything
/// into the actor's mailbox), the sender queues no more than its send
/// buffer: `cast` fails with `Full` rather than queueing, and `send` waits
/// for room. That the actor itself holds senders back is `export_paced`'s
/// part, tested in `pacing.rs`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fast_sender_queues_no_more_than_its_send_buffer() {
    within(T, async {
        // Small windows, so that the sender outruns the credit round trip.
        let mut cfg = Config::default();
        cfg.chunk_size = 4 * 1024;
        cfg.port_window = 8 * 1024;
        cfg.send_buffer = 8 * 1024;
        let a = Node::new(Some("a"), cfg.clone()).unwrap();
        let b = Node::new(Some("b"), cfg.clone()).unwrap();
        let b_id = a.connect(&b.listen("127.0.0.1:0").await.unwrap().to_string()).await.unwrap();
        let (actor, gate) = counter().await;
        export(&b, Some("slow"), actor).unwrap();
        let remote = lookup::<CounterMsg>(&a, b_id, "slow").await.unwrap();
        let conn = a.connection(b_id).unwrap();
        // The send buffer, plus the one message that may overshoot it.
        let bound = cfg.send_buffer as usize + 2 * 1024;

        remote.send(CounterMsg::Pause).await.unwrap();
        let mut accepted = 0u64;
        let mut full = false;
        for _ in 0..1_000_000 {
            match remote.try_cast(CounterMsg::Bulk(1, vec![7; 1024])) {
                Ok(()) => accepted += 1,
                Err(TellError::Full(CounterMsg::Bulk(..))) => {
                    full = true;
                    break;
                }
                Err(e) => panic!("unexpected {e:?}"),
            }
            assert!(conn.stats().send_queued <= bound, "queued {} > {bound}", conn.stats().send_queued);
        }
        assert!(full, "cast never reported Full ({accepted} accepted)");

        // `send` waits for room; the sender's queue stays bounded meanwhile.
        for _ in 0..1_000 {
            remote.send(CounterMsg::Bulk(1, vec![7; 1024])).await.unwrap();
            assert!(conn.stats().send_queued <= bound, "queued {} > {bound}", conn.stats().send_queued);
        }

        gate.notify_one();
        let total = remote.ask(CounterMsg::Get, CALL).await.unwrap();
        assert_eq!(total, accepted + 1_000, "nothing accepted was lost");
    })
    .await;
}
