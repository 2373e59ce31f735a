//! The lifecycle of connections and nodes, over real TCP: what closes
//! itself, what a shutdown guarantees and in what order, how two nodes that
//! dial each other settle on one connection, and that a node's bookkeeping
//! stays bounded however many peers come and go.

mod common;

use std::time::Duration;

use common::{within, TaskMailbox};
use serde::{Deserialize, Serialize};
use tether::{Config, ConnectionError, Node, RemoteError, RemoteRef, ReplyPort, Role, TellError, WatchEvent};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

const T: Duration = Duration::from_secs(10);

#[derive(Serialize, Deserialize, Debug)]
enum Msg {
    Num(u64),
    Count(ReplyPort<Vec<u64>>),
}

/// An actor that keeps every number it is told and answers with them.
fn recorder() -> (TaskMailbox<Msg>, tokio::task::JoinHandle<()>) {
    let (tx, mut rx) = unbounded_channel::<Msg>();
    let task = tokio::spawn(async move {
        let mut seen = Vec::new();
        while let Some(msg) = rx.recv().await {
            match msg {
                Msg::Num(n) => seen.push(n),
                Msg::Count(reply) => {
                    let _ = reply.send(seen.clone());
                }
            }
        }
    });
    (TaskMailbox(tx), task)
}

/// An actor that receives but never handles, stopped by dropping the
/// returned receiver.
fn idle() -> (TaskMailbox<Msg>, UnboundedReceiver<Msg>) {
    let (tx, rx) = unbounded_channel::<Msg>();
    (TaskMailbox(tx), rx)
}

/// A configuration whose idle timeout is far longer than any test here:
/// what these tests see is a goodbye, never silence.
fn patient() -> Config {
    let mut cfg = Config::default();
    cfg.idle_timeout = Duration::from_secs(120);
    cfg.ping_interval = Duration::from_secs(60);
    cfg
}

async fn listening(name: &str) -> (Node, std::net::SocketAddr) {
    let node = Node::new(Some(name), patient()).unwrap();
    let addr = node.listen("127.0.0.1:0").await.unwrap();
    (node, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_with_nothing_left_closes_itself_with_a_goodbye() {
    within(T, async {
        let (c, s) = common::pair(common::Kind::Tcp).await;
        let (tx, rx) = c.root::<u8, u8>().unwrap();
        drop(c);
        // Its channel ends still hold it open.
        tx.send(7).await.unwrap();
        let (_stx, mut srx) = s.root::<u8, u8>().unwrap();
        assert_eq!(srx.recv().await.unwrap(), Some(7));
        assert!(s.error().is_none(), "open while a channel end lives");
        drop((tx, rx));
        match s.closed().await {
            ConnectionError::PeerClosed { code: 1, .. } => {}
            other => panic!("expected the peer's goodbye with code 1, got {other:?}"),
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_frees_the_listening_port_and_peers_see_the_node_leave() {
    within(T, async {
        let (b, b_addr) = listening("b").await;
        let (actor, _task) = recorder();
        b.export(Some("recorder"), actor).unwrap();
        let a = Node::new(Some("a"), patient()).unwrap();
        let b_id = a.connect(b_addr).await.unwrap();
        let r: RemoteRef<Msg> = a.lookup(b_id, "recorder").await.unwrap();
        let monitor = r.monitor();

        b.shutdown().await;
        // The port is free the moment shutdown returns.
        let again = tokio::net::TcpListener::bind(b_addr).await.expect("the port is free after shutdown");
        drop(again);

        // A goodbye, not silence: the idle timeout is two minutes away.
        assert_eq!(monitor.await, WatchEvent::NodeLeft);
        match r.tell(Msg::Num(1)).await {
            Err(TellError::Unreachable { error: RemoteError::NodeLeft(id), .. }) => assert_eq!(id, b_id),
            other => panic!("expected NodeLeft, got {:?}", other.err()),
        }
        assert!(a.peers().is_empty());
        // The shut-down node takes nothing new in.
        assert!(b.listen("127.0.0.1:0").await.is_err());
        assert!(matches!(b.connect(a_addr_of(&a).await).await, Err(tether::ConnectError::NodeShutDown)));
    })
    .await;
}

async fn a_addr_of(node: &Node) -> std::net::SocketAddr {
    node.listen("127.0.0.1:0").await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_last_handle_says_goodbye_too() {
    within(T, async {
        let (b, b_addr) = listening("b").await;
        let (actor, _task) = recorder();
        b.export(Some("recorder"), actor).unwrap();
        let a = Node::new(Some("a"), patient()).unwrap();
        let b_id = a.connect(b_addr).await.unwrap();
        let r: RemoteRef<Msg> = a.lookup(b_id, "recorder").await.unwrap();
        let monitor = r.monitor();
        drop(b);
        assert_eq!(monitor.await, WatchEvent::NodeLeft);
    })
    .await;
}

/// A node that stops an actor and then shuts down gives the actor's
/// watchers `Stopped`, never `NodeLeft` or `NodeLost`: the stop notice
/// goes out before the goodbye. 100 times over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_actor_stopped_before_shutdown_reaches_its_watchers_as_stopped() {
    let a = Node::new(Some("a"), patient()).unwrap();
    for round in 0..100 {
        within(T, async {
            let (b, b_addr) = listening("b").await;
            let (actor, mailbox) = idle();
            b.export(Some("idle"), actor).unwrap();
            let b_id = a.connect(b_addr).await.unwrap();
            let r: RemoteRef<Msg> = a.lookup(b_id, "idle").await.unwrap();
            // The first poll queues the watch on the control channel; a
            // lookup answered after it means B has registered it.
            let mut monitor = r.monitor();
            assert!(futures::poll!(&mut monitor).is_pending());
            a.lookup::<Msg>(b_id, "idle").await.unwrap();
            r.tell(Msg::Num(round)).await.unwrap();
            drop(mailbox);
            b.shutdown().await;
            assert_eq!(monitor.await, WatchEvent::Stopped { reason: None }, "round {round}");
        })
        .await;
    }
}

/// Two nodes that dial each other at the same moment end with one
/// connection between them, the same one on both sides, and what each sent
/// as soon as its `connect` returned arrives once, in order. 100 times over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simultaneous_dials_settle_on_one_connection() {
    const N: u64 = 50;
    for round in 0..100 {
        within(T, async {
            let (a, a_addr) = listening("a").await;
            let (b, b_addr) = listening("b").await;
            let (ra, _ta) = recorder();
            let (rb, _tb) = recorder();
            a.export(Some("recorder"), ra).unwrap();
            b.export(Some("recorder"), rb).unwrap();
            let (to_b, to_a) = tokio::join!(a.connect(b_addr), b.connect(a_addr));
            let (b_id, a_id) = (to_b.unwrap(), to_a.unwrap());
            let (at_b, at_a) = tokio::join!(a.lookup::<Msg>(b_id, "recorder"), b.lookup::<Msg>(a_id, "recorder"));
            let (at_b, at_a) = (at_b.unwrap(), at_a.unwrap());
            for n in 0..N {
                at_b.tell(Msg::Num(n)).await.unwrap();
                at_a.tell(Msg::Num(n)).await.unwrap();
            }
            let want: Vec<u64> = (0..N).collect();
            assert_eq!(at_b.ask(Msg::Count, T).await.unwrap(), want, "round {round}: A to B");
            assert_eq!(at_a.ask(Msg::Count, T).await.unwrap(), want, "round {round}: B to A");
            assert_eq!((a.peers(), b.peers()), (vec![b_id], vec![a_id]), "round {round}");
            // The same connection: closing A's end ends B's.
            let (ab, ba) = (a.connection(b_id).unwrap(), b.connection(a_id).unwrap());
            ab.close().await;
            match ba.closed().await {
                ConnectionError::PeerClosed { code: 0, .. } => {}
                other => panic!("round {round}: B's connection is another one: {other:?}"),
            }
        })
        .await;
    }
}

/// A node that sees 10,000 peers come and go keeps records only for the
/// live ones, and a bounded memory of departed ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookkeeping_stays_bounded_as_peers_come_and_go() {
    within(Duration::from_secs(240), async {
        let hub = Node::new(Some("hub"), patient()).unwrap();
        let (actor, _task) = recorder();
        hub.export(Some("recorder"), actor).unwrap();
        let stay = Node::new(Some("stay"), patient()).unwrap();
        join(&hub, &stay).await;
        for i in 0..10_000u64 {
            let guest = Node::new(None, patient()).unwrap();
            let hub_id = join(&hub, &guest).await;
            let r: RemoteRef<Msg> = guest.lookup(hub_id, "recorder").await.unwrap();
            r.tell(Msg::Num(i)).await.unwrap();
            guest.shutdown().await;
        }
        // The guests' goodbyes are all out; the hub may still be reading the last.
        common::eventually("the last guest is gone", T, || hub.peers().len() == 1).await;
        let stats = hub.stats();
        assert_eq!(stats.peers, 1, "{stats:?}");
        // One live peer (its entry, its name), the last guest's entry if its
        // serving task has not taken it out yet, and at most 1,024 departed
        // ones remembered, with their names; asks are not kept for idle nodes.
        assert!(stats.peer_entries <= 3 + 2 * 1024, "{stats:?}");
        assert_eq!(stats.exports, 1, "{stats:?}");
    })
    .await;
}

/// Connects `guest` to `hub` over an in-memory transport; the hub's id.
async fn join(hub: &Node, guest: &Node) -> tether::NodeId {
    let (x, y) = tether::transport::memory(64 * 1024);
    let (g, h) = tokio::join!(guest.connect_with(x, Role::Dial), hub.connect_with(y, Role::Accept));
    h.unwrap();
    g.unwrap()
}
