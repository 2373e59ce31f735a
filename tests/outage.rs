//! Outages through a fault-injecting proxy: memory at the sender stays
//! within the configured windows while the link is down, the lifecycle
//! events come in order, and nodes keep (or, when resume is impossible,
//! cleanly lose) their peers across cuts, partitions and restarts.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{eventually, within, TaskMailbox};
use serde::{Deserialize, Serialize};
use tether::transport::fault::Proxy;
use tether::{
    oneshot, Accepted, Acceptor, AskError, Config, Connection, ConnectionError, ConnectionEvent, Node, NodeId,
    RemoteError, RemoteRef, ReplyPort, SessionLost, TellError, WatchEvent,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

/// Short timers so that outages are detected in well under a second.
fn quick() -> Config {
    let mut cfg = Config::default();
    cfg.ping_interval = Duration::from_millis(100);
    cfg.idle_timeout = Duration::from_millis(500);
    cfg.handshake_timeout = Duration::from_millis(500);
    cfg.reconnect.base = Duration::from_millis(5);
    cfg.reconnect.cap = Duration::from_millis(50);
    cfg.reconnect.give_up_after = Duration::from_secs(30);
    cfg.linger = Duration::from_secs(10);
    cfg
}

/// A listener whose transports go through one acceptor; new connections
/// come out of the returned channel.
async fn acceptor(cfg: Config) -> (std::net::SocketAddr, UnboundedReceiver<Connection>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = Acceptor::new(cfg).unwrap();
    let (tx, rx) = unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                if let Ok(Accepted::New(conn)) = acceptor.accept(stream).await {
                    let _ = tx.send(conn);
                }
            });
        }
    });
    (addr, rx)
}

/// The next lifecycle event, within a bound; a lagging subscriber fails the
/// test (it would hide events).
async fn next_event(events: &mut broadcast::Receiver<ConnectionEvent>) -> ConnectionEvent {
    match within(Duration::from_secs(10), events.recv()).await {
        Ok(ev) => ev,
        Err(e) => panic!("lifecycle events: {e}"),
    }
}

/// Skips events until `pick` returns something; panics on `SessionLost`
/// unless `pick` takes it.
async fn wait_event<T>(
    events: &mut broadcast::Receiver<ConnectionEvent>,
    mut pick: impl FnMut(&ConnectionEvent) -> Option<T>,
) -> T {
    loop {
        let ev = next_event(events).await;
        if let Some(t) = pick(&ev) {
            return t;
        }
        if let ConnectionEvent::SessionLost(why) = ev {
            panic!("session lost: {why}");
        }
    }
}

const PAYLOAD: usize = 1000;
/// An encoded `(u64, Vec<u8>)` with `PAYLOAD` bytes is at most this long.
const MSG_MAX: usize = PAYLOAD + 24;

fn msg(i: u64) -> (u64, Vec<u8>) {
    (i, vec![i as u8; PAYLOAD])
}

/// Offers numbered messages until one is refused as `Full`.
fn fill(tx: &tether::mpsc::Sender<(u64, Vec<u8>)>, next: &mut u64) {
    for _ in 0..10_000 {
        match tx.try_send(msg(*next)) {
            Ok(()) => *next += 1,
            Err(tether::mpsc::SendError::Full(_)) => return,
            Err(e) => panic!("try_send during an outage: {e}"),
        }
    }
    panic!("try_send never reported Full during the outage");
}

/// The link stops (paused: no byte lost, no FIN) for longer than the idle
/// timeout while the sender keeps offering: `try_send` until `Full`, and a
/// task blocked in `send().await`. The sender's queued and replay bytes stay
/// within `send_buffer` + one message (which counts 64 bytes beyond its
/// encoding) and the port window while the
/// transport is declared dead and reconnection attempts fail; once the link
/// heals (the second time also cut) every message arrives exactly once, in
/// order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sender_memory_stays_bounded_through_a_partition() {
    within(Duration::from_secs(60), async {
        let mut cfg = quick();
        cfg.chunk_size = 4096;
        cfg.port_window = 16 * 1024;
        cfg.send_buffer = 8 * 1024;
        let send_limit = cfg.send_buffer as usize + MSG_MAX + 64;
        let replay_limit = cfg.port_window as usize;

        let (server_addr, mut incoming) = acceptor(cfg.clone()).await;
        let proxy = Proxy::start(server_addr).await.unwrap();
        let via = proxy.local_addr();
        let client = Connection::dial(move || TcpStream::connect(via), cfg.clone()).await.unwrap();
        let server = within(Duration::from_secs(5), incoming.recv()).await.unwrap();
        let (tx, _) = client.root::<(u64, Vec<u8>), ()>().unwrap();
        let (_, mut rx) = server.root::<(), (u64, Vec<u8>)>().unwrap();

        // Counts what arrived; checks order, payload, and that nothing comes
        // after the last message (exactly once).
        let arrived = Arc::new(AtomicUsize::new(0));
        let count = arrived.clone();
        let receiver = tokio::spawn(async move {
            let mut expected = 0u64;
            while let Some((i, payload)) = rx.recv().await.expect("the session survives") {
                assert_eq!(i, expected, "in order, none lost, none twice");
                assert!(payload.len() == PAYLOAD && payload.iter().all(|b| *b == i as u8), "payload of {i}");
                expected += 1;
                count.store(expected as usize, Ordering::SeqCst);
            }
            expected
        });

        // Peaks of the sender's memory, sampled while the test runs.
        let peaks = Arc::new((AtomicUsize::new(0), AtomicUsize::new(0)));
        let stop = Arc::new(AtomicBool::new(false));
        let sampler = {
            let (client, peaks, stop) = (client.clone(), peaks.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    let s = client.stats();
                    peaks.0.fetch_max(s.send_queued, Ordering::SeqCst);
                    peaks.1.fetch_max(s.replay_bytes, Ordering::SeqCst);
                    // The sampling pace: the peaks are what is measured,
                    // nothing waits on this.
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            })
        };

        let mut next = 0u64;
        for _ in 0..100 {
            tx.send(msg(next)).await.unwrap();
            next += 1;
        }

        for outage in 0..2 {
            let mut events = client.events();
            proxy.link().pause();
            // Offer until refused: the send buffer and the window fill up.
            fill(&tx, &mut next);
            // The transport is declared dead (idle timeout), and the first
            // reconnection fails too (its handshake stalls in the pause):
            // the link has been down for idle_timeout + handshake_timeout.
            let disconnected = wait_event(&mut events, |ev| match ev {
                ConnectionEvent::Disconnected(e) => Some(e.clone()),
                _ => None,
            })
            .await;
            assert!(
                matches!(disconnected, ConnectionError::Protocol(tether::ProtocolError::Timeout(_))),
                "{disconnected:?}"
            );
            wait_event(&mut events, |ev| matches!(ev, ConnectionEvent::Reconnecting { attempt: 2, .. }).then_some(()))
                .await;

            // Declared dead, the transport is gone but not the session:
            // offers are still taken or refused as `Full`, never `Closed`,
            // and a sender that waits stays blocked.
            fill(&tx, &mut next);
            let blocked = {
                let tx = tx.clone();
                let first = next;
                tokio::spawn(async move {
                    for i in first..first + 50 {
                        tx.send(msg(i)).await.unwrap();
                    }
                })
            };
            next += 50;

            // Reconnection attempts keep failing meanwhile.
            wait_event(&mut events, |ev| matches!(ev, ConnectionEvent::Reconnecting { attempt: 3, .. }).then_some(()))
                .await;
            let s = client.stats();
            assert!(!blocked.is_finished(), "send() waits while the link is down");
            assert!(s.send_queued > cfg.send_buffer as usize / 2, "the send buffer filled: {s:?}");
            assert!(s.replay_bytes > 0, "unacknowledged data is kept for replay: {s:?}");
            assert!(client.error().is_none());

            if outage == 1 {
                // Whatever transports exist now break; the dialer dials again.
                proxy.cut_all();
            }
            proxy.link().heal();
            wait_event(&mut events, |ev| matches!(ev, ConnectionEvent::Resumed).then_some(())).await;
            within(Duration::from_secs(10), blocked).await.unwrap();
        }

        let total = next;
        drop(tx);
        let got = within(Duration::from_secs(20), receiver).await.unwrap();
        assert_eq!(got, total, "every message arrived exactly once");
        assert_eq!(arrived.load(Ordering::SeqCst) as u64, total);
        stop.store(true, Ordering::SeqCst);
        sampler.await.unwrap();
        let (peak_queued, peak_replay) = (peaks.0.load(Ordering::SeqCst), peaks.1.load(Ordering::SeqCst));
        assert!(peak_queued <= send_limit, "send_queued peaked at {peak_queued} > {send_limit}");
        assert!(peak_replay <= replay_limit, "replay_bytes peaked at {peak_replay} > {replay_limit}");
        assert!(client.error().is_none() && server.error().is_none());
    })
    .await;
}

/// After a cut: `Disconnected`, `Reconnecting { attempt: 1 }`, `Resumed`,
/// in that order. With the target gone for good: `max_attempts` attempts,
/// then `SessionLost(GaveUp)`, and the connection ends with that error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_events_in_order_and_giving_up() {
    within(Duration::from_secs(30), async {
        let mut cfg = quick();
        cfg.reconnect.max_attempts = 3;
        let (server_addr, mut incoming) = acceptor(quick()).await;
        let proxy = Proxy::start(server_addr).await.unwrap();
        let via = proxy.local_addr();
        let client = Connection::dial(move || TcpStream::connect(via), cfg).await.unwrap();
        let server = within(Duration::from_secs(5), incoming.recv()).await.unwrap();
        let (tx, mut client_rx) = client.root::<u64, u64>().unwrap();
        let (server_tx, mut rx) = server.root::<u64, u64>().unwrap();

        for round in 0..3u64 {
            let mut events = client.events();
            proxy.cut_all();
            let ev = next_event(&mut events).await;
            assert!(matches!(ev, ConnectionEvent::Disconnected(_)), "round {round}: {ev:?}");
            let ev = next_event(&mut events).await;
            assert!(matches!(ev, ConnectionEvent::Reconnecting { attempt: 1, .. }), "round {round}: {ev:?}");
            let ev = next_event(&mut events).await;
            assert!(matches!(ev, ConnectionEvent::Resumed), "round {round}: {ev:?}");
            let stats = client.stats();
            assert_eq!((stats.reconnects, stats.resumes), (round + 1, round + 1), "counted in the stats");
            // The session carries on.
            tx.send(round).await.unwrap();
            assert_eq!(within(Duration::from_secs(5), rx.recv()).await.unwrap(), Some(round));
            server_tx.send(round).await.unwrap();
            assert_eq!(within(Duration::from_secs(5), client_rx.recv()).await.unwrap(), Some(round));
        }
        // Each message counted once on each side, whatever the resumes replayed.
        let (c, s) = (client.stats(), server.stats());
        assert_eq!((c.messages_out, c.messages_in, s.messages_out, s.messages_in), (3, 3, 3, 3));

        // The target disappears: every reconnection attempt fails.
        let mut events = client.events();
        drop(proxy);
        let ev = next_event(&mut events).await;
        assert!(matches!(ev, ConnectionEvent::Disconnected(_)), "{ev:?}");
        for attempt in 1..=3 {
            let ev = next_event(&mut events).await;
            assert!(
                matches!(ev, ConnectionEvent::Reconnecting { attempt: a, .. } if a == attempt),
                "attempt {attempt}: {ev:?}"
            );
        }
        let ev = next_event(&mut events).await;
        assert!(matches!(ev, ConnectionEvent::SessionLost(SessionLost::GaveUp { attempts: 3 })), "{ev:?}");
        let err = within(Duration::from_secs(5), client.closed()).await;
        assert!(matches!(err, ConnectionError::SessionLost(SessionLost::GaveUp { attempts: 3 })), "{err:?}");
        assert!(matches!(client.error(), Some(ConnectionError::SessionLost(SessionLost::GaveUp { .. }))));
        // Handles see the same typed error.
        let got = within(Duration::from_secs(5), client_rx.recv()).await;
        assert!(
            matches!(got, Err(tether::RecvError::Connection(ConnectionError::SessionLost(SessionLost::GaveUp { .. })))),
            "{got:?}"
        );
        let refused = tx.send(99).await;
        assert!(matches!(refused, Err(tether::mpsc::SendError::Closed(99))), "{refused:?}");
    })
    .await;
}

// ----- nodes -----------------------------------------------------------

#[derive(Serialize, Deserialize, Debug)]
enum Msg {
    Num(u64),
    Double(u64, ReplyPort<u64>),
}

/// An actor that reports every `Num` on `seen` and answers `Double`.
fn sink(seen: UnboundedSender<u64>) -> TaskMailbox<Msg> {
    let (tx, mut rx) = unbounded_channel::<Msg>();
    tokio::spawn(async move {
        while let Some(msg) = rx.recv().await {
            match msg {
                Msg::Num(n) => {
                    let _ = seen.send(n);
                }
                Msg::Double(n, reply) => {
                    let _ = reply.send(n * 2);
                }
            }
        }
    });
    TaskMailbox(tx)
}

/// A dials B through a proxy, with reconnection on; returns B's id and a
/// ref to B's sink actor (whose numbers come out of the receiver).
async fn nodes_through_proxy(
    a: &Node,
    b: &Node,
) -> (Proxy, std::net::SocketAddr, NodeId, RemoteRef<Msg>, UnboundedReceiver<u64>) {
    let b_addr = b.listen("127.0.0.1:0").await.unwrap();
    let proxy = Proxy::start(b_addr).await.unwrap();
    let b_id = a.connect(&proxy.local_addr().to_string()).await.unwrap();
    assert_eq!(b_id, b.id());
    let (seen_tx, seen) = unbounded_channel();
    b.export(Some("sink"), sink(seen_tx)).unwrap();
    let r: RemoteRef<Msg> = a.lookup(b_id, "sink").await.unwrap();
    (proxy, b_addr, b_id, r, seen)
}

/// A node's connections reconnect and resume by default: these tests rely
/// on the default (`Config::reconnect.enabled`).
fn dialing() -> Config {
    quick()
}

/// Numbered tells and asks while the link is cut five times: all arrive
/// exactly once and in order, every ask is answered, the ref keeps working,
/// both nodes keep listing each other, and the monitor stays quiet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_link_survives_cuts() {
    within(Duration::from_secs(60), async {
        let a = Node::new(Some("a"), dialing()).unwrap();
        let b = Node::new(Some("b"), quick()).unwrap();
        let (proxy, _, b_id, r, mut seen) = nodes_through_proxy(&a, &b).await;
        let monitor = tokio::spawn(r.monitor());
        let conn = a.connection(b_id).unwrap();
        let mut events = conn.events();

        const N: u64 = 30_000;
        let teller = {
            let r = r.clone();
            tokio::spawn(async move {
                for i in 0..N {
                    r.tell(Msg::Num(i)).await.unwrap();
                }
            })
        };
        let mut cuts = 0u64;
        while cuts < 5 {
            // The subject: cuts at random moments of the stream, not a wait
            // for anything.
            let pause = 1 + uuid::Uuid::new_v4().as_u64_pair().0 % 5;
            tokio::time::sleep(Duration::from_millis(pause)).await;
            proxy.cut_all();
            cuts += 1;
            // An ask made while the link is down is answered after resume.
            let ask = r.ask(|p| Msg::Double(cuts, p), Duration::from_secs(10));
            let resumed = wait_event(&mut events, |ev| matches!(ev, ConnectionEvent::Resumed).then_some(()));
            let (answer, ()) = tokio::join!(ask, resumed);
            assert_eq!(answer.unwrap(), cuts * 2, "cut {cuts}");
            assert!(!monitor.is_finished(), "no monitor fires during an outage");
            assert_eq!(a.peers(), vec![b_id]);
        }
        within(Duration::from_secs(30), teller).await.unwrap();
        for expected in 0..N {
            let got = within(Duration::from_secs(10), seen.recv()).await.unwrap();
            assert_eq!(got, expected, "in order, none lost, none twice");
        }
        // An ask travels behind every tell on the same route: once it is
        // answered, a duplicate would have shown.
        assert_eq!(r.ask(|p| Msg::Double(21, p), Duration::from_secs(10)).await.unwrap(), 42);
        let got = seen.try_recv();
        assert!(matches!(got, Err(tokio::sync::mpsc::error::TryRecvError::Empty)), "nothing twice: {got:?}");
        assert!(!monitor.is_finished(), "no monitor fires during an outage");
        assert_eq!(a.peers(), vec![b_id]);
        assert_eq!(b.peers(), vec![a.id()]);
        assert!(conn.error().is_none());
    })
    .await;
}

/// B forgets the session (its linger is shorter than the partition): A's
/// pending ask fails with a typed error, the monitor reports `NodeLost`,
/// tells fail, and nothing hangs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_link_lost_when_the_peer_forgot_the_session() {
    within(Duration::from_secs(30), async {
        let a = Node::new(Some("a"), dialing()).unwrap();
        let mut b_cfg = quick();
        b_cfg.linger = Duration::from_millis(200);
        let b = Node::new(Some("b"), b_cfg).unwrap();
        let (proxy, _, b_id, r, _seen) = nodes_through_proxy(&a, &b).await;
        let monitor = tokio::spawn(r.monitor());
        let conn = a.connection(b_id).unwrap();
        let mut events = conn.events();
        let b_conn = b.connection(a.id()).unwrap();

        proxy.link().pause();
        // Far longer than the failure can take: a timeout is not the answer.
        let ask = tokio::spawn({
            let r = r.clone();
            async move { r.ask(|p| Msg::Double(1, p), Duration::from_secs(25)).await }
        });
        wait_event(&mut events, |ev| matches!(ev, ConnectionEvent::Disconnected(_)).then_some(())).await;
        let expired = within(Duration::from_secs(10), b_conn.closed()).await;
        assert!(matches!(expired, ConnectionError::SessionLost(SessionLost::Expired)), "{expired:?}");
        assert!(!monitor.is_finished(), "the dialer still hopes to resume");
        proxy.link().heal();

        let lost = wait_event(&mut events, |ev| match ev {
            ConnectionEvent::SessionLost(why) => Some(why.clone()),
            _ => None,
        })
        .await;
        assert_eq!(lost, SessionLost::Expired);
        let answer = within(Duration::from_secs(10), ask).await.unwrap();
        match answer {
            Err(AskError::Reply(oneshot::RecvError::Connection(ConnectionError::SessionLost(
                SessionLost::Expired,
            ))))
            | Err(AskError::Unreachable(RemoteError::NodeLost(_))) => {}
            other => panic!("expected a typed loss, got {other:?}"),
        }
        assert_eq!(within(Duration::from_secs(10), monitor).await.unwrap(), WatchEvent::NodeLost);
        match r.tell(Msg::Num(0)).await {
            Err(TellError::Unreachable { error: RemoteError::NodeLost(id), .. }) => assert_eq!(id, b_id),
            other => panic!("expected NodeLost, got {:?}", other.err().map(|e| e.to_string())),
        }
        eventually("A forgets B", Duration::from_secs(5), || a.peers().is_empty()).await;
        assert!(matches!(conn.error(), Some(ConnectionError::SessionLost(SessionLost::Expired))));

        // A new connection to the same node works at once: the refused
        // resume left no phantom session on B to refuse it as a duplicate.
        let again = within(Duration::from_secs(5), a.connect(&proxy.local_addr().to_string())).await.unwrap();
        assert_eq!(again, b_id);
        let r: RemoteRef<Msg> = a.lookup(b_id, "sink").await.unwrap();
        assert_eq!(r.ask(|p| Msg::Double(5, p), Duration::from_secs(5)).await.unwrap(), 10);
        assert_eq!(b.peers(), vec![a.id()]);
    })
    .await;
}

/// B's process dies (node dropped, its transport cut) and a new incarnation
/// listens on the same port: A's reconnection reaches it, sees a new
/// identity, and gives up the session: pending asks fail with a typed error,
/// the monitor reports `NodeRestarted`, and A can connect to the new node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_restart_behind_the_same_address() {
    within(Duration::from_secs(30), async {
        let a = Node::new(Some("a"), dialing()).unwrap();
        let b = Node::new(Some("b"), quick()).unwrap();
        let (proxy, b_addr, b_id, r, _seen) = nodes_through_proxy(&a, &b).await;
        let monitor = tokio::spawn(r.monitor());
        let conn = a.connection(b_id).unwrap();
        let mut events = conn.events();
        assert_eq!(r.ask(|p| Msg::Double(2, p), Duration::from_secs(5)).await.unwrap(), 4);

        // The process dies: its node goes, and so do its transports, without
        // a goodbye (the pause keeps the one the dropped node says from A).
        proxy.link().pause();
        let ask = tokio::spawn({
            let r = r.clone();
            async move { r.ask(|p| Msg::Double(1, p), Duration::from_secs(25)).await }
        });
        drop(b);
        proxy.cut_all();
        wait_event(&mut events, |ev| matches!(ev, ConnectionEvent::Disconnected(_)).then_some(())).await;

        // The dead node's listener lets go of the port at its next accept;
        // bind the new incarnation there (no event announces the release).
        let b2 = Node::new(Some("b"), quick()).unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            match b2.listen(b_addr).await {
                Ok(_) => break,
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                    assert!(tokio::time::Instant::now() < deadline, "port {b_addr} never freed");
                    let _ = TcpStream::connect(b_addr).await;
                    // Paces the retries of a bind nothing announces.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err(e) => panic!("bind {b_addr}: {e}"),
            }
        }
        proxy.link().heal();

        let lost = wait_event(&mut events, |ev| match ev {
            ConnectionEvent::SessionLost(why) => Some(why.clone()),
            _ => None,
        })
        .await;
        assert_eq!(lost, SessionLost::PeerRestarted);
        let answer = within(Duration::from_secs(10), ask).await.unwrap();
        match answer {
            Err(AskError::Reply(oneshot::RecvError::Connection(ConnectionError::SessionLost(
                SessionLost::PeerRestarted,
            ))))
            | Err(AskError::Unreachable(RemoteError::NodeRestarted(_))) => {}
            other => panic!("expected a typed loss, got {other:?}"),
        }
        assert_eq!(within(Duration::from_secs(10), monitor).await.unwrap(), WatchEvent::NodeRestarted);
        assert_eq!(within(Duration::from_secs(5), r.monitor()).await, WatchEvent::NodeRestarted);
        match r.tell(Msg::Num(0)).await {
            Err(TellError::Unreachable { error: RemoteError::NodeRestarted(id), .. }) => assert_eq!(id, b_id),
            other => panic!("expected NodeRestarted, got {:?}", other.err().map(|e| e.to_string())),
        }
        // The new incarnation is reachable at the same address.
        let b2_id = a.connect(&proxy.local_addr().to_string()).await.unwrap();
        assert_eq!(b2_id, b2.id());
        assert_ne!(b2_id, b_id);
        eventually("A lists only the new incarnation", Duration::from_secs(5), || a.peers() == vec![b2_id]).await;
    })
    .await;
}
