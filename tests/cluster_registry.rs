//! Names, groups and topics across a cluster in one process, over real UDP
//! and TCP on loopback: names visible from every member and gone when their
//! actor stops or their node leaves, the unique-claim rule, group sends with
//! failover, and publish/subscribe.

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use common::{eventually, within, TaskMailbox};
use serde::{Deserialize, Serialize};
use tether::cluster::{Cluster, ClusterConfig, GroupEvent, GroupKey, MemberStatus, NameEvent, RegistryError, Strategy};
use tether::{Config, Cookie, Node, NodeId, RemoteError, RemoteRef, ReplyPort};

const T: Duration = Duration::from_secs(30);

#[derive(Serialize, Deserialize, Debug)]
enum Msg {
    Num(u64),
    Who(ReplyPort<String>),
}

/// An actor answering `Who` with `me`, forwarding each `Num` to `seen`.
fn actor(me: &str, seen: tokio::sync::mpsc::UnboundedSender<(String, u64)>) -> TaskMailbox<Msg> {
    spawn_actor(me, seen, None)
}

/// [`actor`], and what stops it when sent to or dropped.
fn stoppable(
    me: &str,
    seen: tokio::sync::mpsc::UnboundedSender<(String, u64)>,
) -> (TaskMailbox<Msg>, tokio::sync::oneshot::Sender<()>) {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    (spawn_actor(me, seen, Some(stopped)), stop)
}

fn spawn_actor(
    me: &str,
    seen: tokio::sync::mpsc::UnboundedSender<(String, u64)>,
    stopped: Option<tokio::sync::oneshot::Receiver<()>>,
) -> TaskMailbox<Msg> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let me = me.to_owned();
    tokio::spawn(async move {
        let stopped = async move {
            match stopped {
                Some(rx) => drop(rx.await),
                None => std::future::pending().await,
            }
        };
        tokio::pin!(stopped);
        loop {
            let msg = tokio::select! {
                msg = rx.recv() => match msg { Some(msg) => msg, None => break },
                () = &mut stopped => break,
            };
            match msg {
                Msg::Num(n) => {
                    let _ = seen.send((me.clone(), n));
                }
                Msg::Who(reply) => {
                    let _ = reply.send(me.clone());
                }
            }
        }
    });
    TaskMailbox(tx)
}

#[derive(Serialize, Deserialize, Debug, Clone)]
struct News(u64);

/// A subscriber forwarding each `News` to `seen`.
fn subscriber(me: &str, seen: tokio::sync::mpsc::UnboundedSender<(String, u64)>) -> TaskMailbox<News> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<News>();
    let me = me.to_owned();
    tokio::spawn(async move {
        while let Some(News(n)) = rx.recv().await {
            let _ = seen.send((me.clone(), n));
        }
    });
    TaskMailbox(tx)
}

fn quiet() -> tokio::sync::mpsc::UnboundedSender<(String, u64)> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move { while rx.recv().await.is_some() {} });
    tx
}

fn config() -> Config {
    let mut cfg = Config::default();
    cfg.cookie = Some(Cookie::new([7u8; 32]));
    cfg
}

async fn member(name: &str, seeds: &[SocketAddr]) -> (Node, Cluster) {
    let node = Node::new(Some(name), config()).unwrap();
    let addr = node.listen("127.0.0.1:0").await.unwrap();
    let mut cc = ClusterConfig::default();
    for s in seeds {
        cc = cc.seed(*s);
    }
    let cluster = Cluster::join(&node, addr, cc).await.unwrap();
    (node, cluster)
}

fn up(c: &Cluster) -> HashSet<NodeId> {
    c.members().into_iter().filter(|m| m.status == MemberStatus::Up).map(|m| m.id).collect()
}

async fn converged(all: &[(Node, Cluster)]) {
    let ids: Vec<NodeId> = all.iter().map(|(n, _)| n.id()).collect();
    for (node, c) in all {
        let others: HashSet<NodeId> = ids.iter().copied().filter(|i| *i != node.id()).collect();
        let c = c.clone();
        eventually("every member knows every other", T, move || up(&c) == others).await;
    }
}

async fn cluster_of(n: usize) -> Vec<(Node, Cluster)> {
    let first = member("m0", &[]).await;
    let seed = first.1.me().addr;
    let mut all = vec![first];
    for i in 1..n {
        all.push(member(&format!("m{i}"), &[seed]).await);
    }
    converged(&all).await;
    all
}

async fn who(r: &RemoteRef<Msg>) -> String {
    r.ask(Msg::Who, T).await.expect("the actor answers")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_is_found_from_every_member_and_goes_with_its_actor() {
    let all = cluster_of(4).await;
    let (worker, stop) = stoppable("worker", quiet());
    all[1].0.export(Some("worker"), worker).unwrap();
    let mut watch = all[3].1.watch_name("worker");
    for (_, c) in &all {
        let probe = c.clone();
        eventually("the name reaches every member", T, move || probe.lookup_all::<Msg>("worker").is_ok()).await;
        let r = within(T, c.lookup::<Msg>("worker")).await.unwrap();
        assert_eq!(r.id().node, all[1].0.id());
        assert_eq!(who(&r).await, "worker");
    }
    let registered = within(T, watch.recv()).await.unwrap();
    assert!(matches!(registered, NameEvent::Registered(a) if a.node == all[1].0.id()), "{registered:?}");

    // A type the actor does not take is refused, naming both tags.
    match within(T, all[2].1.lookup::<u64>("worker")).await {
        Err(RemoteError::TypeMismatch { expected, found }) => {
            assert!(expected.contains("u64") && found.contains("Msg"), "{expected} / {found}")
        }
        other => panic!("expected a type mismatch, got {other:?}"),
    }

    drop(stop); // the actor stops
    let gone = within(T, watch.recv()).await.unwrap();
    assert!(matches!(gone, NameEvent::Unregistered(a) if a.node == all[1].0.id()), "{gone:?}");
    for (_, c) in &all {
        let c = c.clone();
        eventually("the name is gone everywhere", T, move || {
            matches!(c.lookup_all::<Msg>("worker"), Err(RemoteError::NotFound(_)))
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_claims_made_apart_resolve_to_one_winner_everywhere_and_the_loser_is_told() {
    // Two clusters of one member each claim the name, then a third member
    // seeded by both merges them.
    let a = member("a", &[]).await;
    let b = member("b", &[]).await;
    let ra = a.0.export(None, actor("a", quiet())).unwrap();
    let mut claim_a = a.1.register("leader", &ra).unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await; // a later claim
    let rb = b.0.export(None, actor("b", quiet())).unwrap();
    let mut claim_b = b.1.register("leader", &rb).unwrap();
    let c = member("c", &[a.1.me().addr, b.1.me().addr]).await;
    let all = vec![a, b, c];
    converged(&all).await;

    let winner = within(T, claim_b.lost()).await;
    assert_eq!(winner, Some(ra.id()), "the earlier claim wins");
    for (_, cl) in &all {
        let (probe, want) = (cl.clone(), ra.id());
        eventually("every member finds the winner only", T, move || {
            probe
                .lookup_all::<Msg>("leader")
                .is_ok_and(|refs| refs.iter().map(|r| r.id()).collect::<Vec<_>>() == [want])
        })
        .await;
        assert_eq!(who(&within(T, cl.lookup::<Msg>("leader")).await.unwrap()).await, "a");
    }
    // The winner still holds it; a new claim elsewhere is refused at once.
    assert!(tokio::time::timeout(Duration::from_millis(200), claim_a.lost()).await.is_err());
    let rc = all[2].0.export(None, actor("c", quiet())).unwrap();
    match all[2].1.register("leader", &rc) {
        Err(RegistryError::Taken { holder, .. }) => assert_eq!(holder, ra.id()),
        other => panic!("expected Taken, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_members_are_seen_everywhere_and_sends_skip_a_stopped_member() {
    let all = cluster_of(3).await;
    let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
    let (mut refs, mut stops) = (Vec::new(), Vec::new());
    for (i, (node, c)) in all.iter().enumerate() {
        let (mb, stop) = stoppable(&format!("w{i}"), seen_tx.clone());
        let r = node.export(None, mb).unwrap();
        c.join_group("workers", &r).unwrap();
        refs.push(r);
        stops.push(Some(stop));
    }
    let mut watch = all[0].1.watch_group("workers");
    for (_, c) in &all {
        let c = c.clone();
        eventually("every member sees three workers", T, move || c.group_members::<Msg>("workers").len() == 3).await;
    }
    let mut joined = HashSet::new();
    while joined.len() < 3 {
        match within(T, watch.recv()).await.unwrap() {
            GroupEvent::Joined(a) => joined.insert(a),
            other => panic!("{other:?}"),
        };
    }

    // Round robin from one member reaches each worker in turn.
    let group = all[2].1.group::<Msg>("workers");
    let mut got = HashSet::new();
    for n in 0..30 {
        group.tell(Msg::Num(n)).await.unwrap();
        got.insert(within(T, seen.recv()).await.unwrap().0);
    }
    assert_eq!(got.len(), 3, "{got:?}");

    // Keyed sends go to one member per key.
    let g = group.clone().with_strategy(Strategy::Random);
    let first = g.tell_keyed(&"user-17", Msg::Num(100)).await.unwrap();
    for n in 0..10 {
        assert_eq!(g.tell_keyed(&"user-17", Msg::Num(101 + n)).await.unwrap(), first);
    }
    while seen.try_recv().is_ok() {}

    // One worker leaves its group; nothing goes to it after.
    assert!(all[1].1.leave_group("workers", &refs[1]));
    let left = within(T, watch.recv()).await.unwrap();
    assert_eq!(left, GroupEvent::Left(refs[1].id()));
    let c = all[2].1.clone();
    eventually("the sender's view follows", T, move || c.group_members::<Msg>("workers").len() == 2).await;
    for n in 0..20 {
        let to = group.tell(Msg::Num(n)).await.unwrap();
        assert_ne!(to, refs[1].id());
    }

    // A worker's actor stops. Once the sender's node has heard (its monitor
    // fires), sends skip it at once: its route is found closed and the
    // message comes back to go to the next, or the registry has already
    // taken it out.
    let _ = stops[0].take().unwrap().send(());
    let seen_stop = group.members().iter().find(|r| r.id() == refs[0].id()).expect("still listed").monitor();
    assert_eq!(within(T, seen_stop).await, tether::WatchEvent::Stopped { reason: None });
    for n in 0..20 {
        let to = within(Duration::from_secs(5), group.tell(Msg::Num(n))).await.unwrap();
        assert_ne!(to, refs[0].id());
    }

    // Scopes keep groups apart.
    all[2].1.join_group(GroupKey::scoped("other", "workers"), &refs[2]).unwrap();
    let c = all[0].1.clone();
    eventually("the scoped group arrives and the stopped worker is gone", T, move || {
        c.group_members::<Msg>(GroupKey::scoped("other", "workers")).len() == 1
            && c.group_members::<Msg>("workers").len() == 1
    })
    .await;
    assert_eq!(all[1].1.group_members::<Msg>("workers")[0].id(), refs[2].id());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_leaves_takes_its_names_and_group_members_along() {
    let all = cluster_of(3).await;
    let r = all[1].0.export(Some("svc"), actor("svc", quiet())).unwrap();
    all[1].1.join_group("g", &r).unwrap();
    let c = all[0].1.clone();
    eventually("the member's records arrive", T, move || {
        c.lookup_all::<Msg>("svc").is_ok() && c.group_members::<Msg>("g").len() == 1
    })
    .await;
    let mut events = all[0].1.subscribe();
    let gone = all[1].0.id();
    all[1].0.shutdown().await;
    loop {
        if let tether::cluster::ClusterEvent::NodeLeft(m) = within(T, events.recv()).await.unwrap() {
            if m.id == gone {
                break;
            }
        }
    }
    // Gone by the time the event is out.
    assert!(matches!(all[0].1.lookup_all::<Msg>("svc"), Err(RemoteError::NotFound(_))));
    assert!(all[0].1.group_members::<Msg>("g").is_empty());
    let failed = all[0].1.group::<Msg>("g").tell(Msg::Num(1)).await;
    assert!(failed.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_subscriber_gets_each_publication_once_in_order() {
    const N: u64 = 2000;
    let all = cluster_of(3).await;
    let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
    for (i, (node, c)) in all.iter().enumerate() {
        let r = node.export(None, subscriber(&format!("s{i}"), seen_tx.clone())).unwrap();
        c.topic::<News>("news").subscribe(&r).unwrap();
    }
    let topic = all[0].1.topic::<News>("news");
    let t = topic.clone();
    eventually("three subscribers", T, move || t.subscribers().len() == 3).await;
    for n in 0..N {
        let report = topic.publish(News(n)).await;
        assert_eq!(report.sent, 3, "{report:?}");
    }
    let mut next = std::collections::HashMap::new();
    for _ in 0..3 * N {
        let (who, n) = within(T, seen.recv()).await.unwrap();
        let want = next.entry(who.clone()).or_insert(0u64);
        assert_eq!(n, *want, "{who} got {n}, expected {want}");
        *want += 1;
    }
    assert!(tokio::time::timeout(Duration::from_millis(300), seen.recv()).await.is_err(), "nothing more arrives");
    assert!(next.values().all(|&v| v == N));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claiming_a_name_again_keeps_the_claim_and_its_handles() {
    let (node, cluster) = member("solo", &[]).await;
    let r = node.export(None, actor("solo", quiet())).unwrap();
    let mut first = cluster.register("x", &r).unwrap();
    let mut second = cluster.register("x", &r).unwrap();
    let other = node.export(None, actor("other", quiet())).unwrap();
    assert!(matches!(cluster.register("x", &other), Err(RegistryError::Taken { .. })));
    // Still held: neither handle hears an end.
    assert!(tokio::time::timeout(Duration::from_millis(200), first.lost()).await.is_err());
    assert!(tokio::time::timeout(Duration::from_millis(10), second.lost()).await.is_err());
    assert_eq!(cluster.lookup_all::<Msg>("x").unwrap().len(), 1);
    // Given up: both hear it ended without a winner.
    assert!(cluster.unregister("x"));
    assert_eq!(within(T, first.lost()).await, None);
    assert_eq!(within(T, second.lost()).await, None);
}

/// Records published right after `Cluster::join`, before the member has met
/// anyone (and, on this single-threaded runtime, before its membership task
/// first ran), still spread.
#[tokio::test(flavor = "current_thread")]
async fn a_group_joined_right_after_join_reaches_the_others() {
    let (_seed_node, seed) = member("seed", &[]).await;
    let node = Node::new(Some("early"), config()).unwrap();
    let addr = node.listen("127.0.0.1:0").await.unwrap();
    let early = Cluster::join(&node, addr, ClusterConfig::default().seed(seed.me().addr)).await.unwrap();
    let r = node.export(None, actor("early", quiet())).unwrap();
    early.join_group("g", &r).unwrap();
    let mut joined = seed.watch_group("g");
    assert_eq!(within(T, joined.recv()).await.unwrap(), GroupEvent::Joined(r.id()));
}

/// When its node shuts down, a member's claims end (their holders hear
/// `None`) and its watches of names and groups end (`Closed`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_and_watches_end_when_the_node_leaves() {
    let (node, cluster) = member("leaving", &[]).await;
    let r = node.export(None, actor("leaving", quiet())).unwrap();
    let mut claim = cluster.register("x", &r).unwrap();
    let mut names = cluster.watch_name("x");
    assert_eq!(within(T, names.recv()).await, Ok(NameEvent::Registered(r.id())));
    let mut groups = cluster.watch_group("g");
    node.shutdown().await;
    assert_eq!(within(T, claim.lost()).await, None);
    assert_eq!(within(T, names.recv()).await, Err(tether::cluster::EventsError::Closed));
    assert_eq!(within(T, groups.recv()).await, Err(tether::cluster::EventsError::Closed));
}

/// An actor exported once for two message types is found by name from
/// another member as either type, and refused as a third, naming both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_actor_of_two_types_is_found_by_name_as_either() {
    let all = cluster_of(2).await;
    let news = tokio::sync::mpsc::unbounded_channel();
    all[0].0.export_many(Some("desk"), actor("desk", quiet())).mailbox(subscriber("desk", news.0)).finish().unwrap();
    let c = all[1].1.clone();
    eventually("the name reaches the other member", T, move || c.lookup_all::<Msg>("desk").is_ok()).await;
    let as_msg = within(T, all[1].1.lookup::<Msg>("desk")).await.unwrap();
    let as_news = within(T, all[1].1.lookup::<News>("desk")).await.unwrap();
    assert_eq!(as_msg.id(), as_news.id(), "one actor");
    assert_eq!(who(&as_msg).await, "desk");
    as_news.tell(News(9)).await.unwrap();
    let mut news = news.1;
    assert_eq!(within(T, news.recv()).await, Some(("desk".to_owned(), 9)));
    match within(T, all[1].1.lookup::<u64>("desk")).await {
        Err(RemoteError::TypeMismatch { found, .. }) => {
            assert!(found.contains("Msg") && found.contains("News"), "{found}")
        }
        other => panic!("expected a type mismatch, got {other:?}"),
    }
}
