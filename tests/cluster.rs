//! Clusters in one process, over real UDP and TCP on loopback: joining from
//! a seed, the view and its events, leaving, failure of a member, connecting
//! on demand, and gossip from outsiders.

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use common::{eventually, within, TaskMailbox};
use serde::{Deserialize, Serialize};
use tether::cluster::{Cluster, ClusterConfig, ClusterError, ClusterEvent, EventsError, MemberStatus, MAX_NAME};
use tether::{Config, Cookie, Node, NodeId, RemoteRef, ReplyPort};

const T: Duration = Duration::from_secs(30);

#[derive(Serialize, Deserialize, Debug)]
enum Msg {
    /// Passes `target` on along `chain`; the last one asks it.
    Relay {
        target: RemoteRef<Msg>,
        chain: Vec<RemoteRef<Msg>>,
        done: ReplyPort<u64>,
    },
    Get(ReplyPort<u64>),
}

/// An actor answering `Get` with `value`, relaying refs as `Msg::Relay`
/// says.
fn actor(value: u64) -> TaskMailbox<Msg> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(msg) = rx.recv().await {
            match msg {
                Msg::Get(reply) => {
                    let _ = reply.send(value);
                }
                Msg::Relay { target, mut chain, done } => {
                    tokio::spawn(async move {
                        if chain.is_empty() {
                            let got =
                                target.ask(Msg::Get, Duration::from_secs(10)).await.expect("the last asks the first");
                            let _ = done.send(got);
                        } else {
                            let next = chain.remove(0);
                            next.tell(Msg::Relay { target, chain, done }).await.expect("relay");
                        }
                    });
                }
            }
        }
    });
    TaskMailbox(tx)
}

fn cookie() -> Cookie {
    Cookie::new([42u8; 32])
}

fn config(cookie: Option<Cookie>) -> Config {
    let mut cfg = Config::default();
    cfg.cookie = cookie;
    cfg
}

async fn member(name: &str, cfg: Config, seeds: &[SocketAddr]) -> (Node, Cluster) {
    let node = Node::new(Some(name), cfg).unwrap();
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

/// `n` members, all seeded by the first; waits until each knows all others.
async fn cluster_of(n: usize) -> Vec<(Node, Cluster)> {
    let first = member("m0", config(Some(cookie())), &[]).await;
    let seed = first.1.me().addr;
    let mut all = vec![first];
    for i in 1..n {
        all.push(member(&format!("m{i}"), config(Some(cookie())), &[seed]).await);
    }
    let ids: Vec<NodeId> = all.iter().map(|(n, _)| n.id()).collect();
    for (node, c) in &all {
        let others: HashSet<NodeId> = ids.iter().copied().filter(|i| *i != node.id()).collect();
        let c = c.clone();
        eventually("every member knows every other", T, move || up(&c) == others).await;
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_learn_each_other_from_one_seed_and_report_leave() {
    within(T, async {
        let all = cluster_of(5).await;
        let (a, ca) = &all[1];
        let names: HashSet<_> = ca.members().into_iter().map(|m| m.name.unwrap()).collect();
        assert_eq!(names, ["m0", "m2", "m3", "m4"].into_iter().map(String::from).collect());
        assert_eq!(ca.me().id, a.id());
        let again = Cluster::join(a, ca.me().addr, ClusterConfig::default()).await;
        assert!(matches!(again, Err(ClusterError::AlreadyJoined)), "{again:?}");
        let long = Node::new(Some(&"n".repeat(MAX_NAME + 1)), Config::default()).unwrap();
        let at = long.listen("127.0.0.1:0").await.unwrap();
        assert!(matches!(Cluster::join(&long, at, ClusterConfig::default()).await, Err(ClusterError::NameTooLong)));
        let any = "0.0.0.0:7000".parse().unwrap();
        assert!(matches!(Cluster::join(&long, any, ClusterConfig::default()).await, Err(ClusterError::Unspecified(_))));

        // A subscription starts with who is up now.
        let mut events = ca.subscribe();
        let mut initial = HashSet::new();
        for _ in 0..4 {
            match events.recv().await.unwrap() {
                ClusterEvent::NodeUp(m) => initial.insert(m.id),
                other => panic!("expected the initial NodeUp events, got {other:?}"),
            };
        }
        assert_eq!(initial, up(ca));

        // One shuts down: everyone else hears it left (not down).
        let (gone, _) = &all[3];
        let gone_id = gone.id();
        gone.shutdown().await;
        match events.recv().await.unwrap() {
            ClusterEvent::NodeLeft(m) => assert_eq!(m.id, gone_id),
            other => panic!("expected NodeLeft, got {other:?}"),
        }
        for (i, (_, c)) in all.iter().enumerate() {
            if i != 3 {
                let c = c.clone();
                eventually("the member shows as left", T, move || {
                    c.members().iter().any(|m| m.id == gone_id && m.status == MemberStatus::Left)
                })
                .await;
            }
        }
        // Its own subscriptions end.
        let mut own = all[3].1.subscribe();
        assert_eq!(own.recv().await, Err(EventsError::Closed));
        use futures::StreamExt;
        assert!(all[3].1.subscribe().into_stream().next().await.is_none());
        let mut stream = all[0].1.subscribe().into_stream();
        assert!(matches!(stream.next().await, Some(Ok(ClusterEvent::NodeUp(_)))));
    })
    .await;
}

/// Dropping a node's last handle does what shutdown does, without waiting:
/// it leaves. (Crashes, freezes and cut links are in `cluster_processes.rs`
/// and `cluster_netns.rs`: they need processes and namespaces.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_node_leaves() {
    within(T, async {
        let mut all = cluster_of(4).await;
        let mut events = all[0].1.subscribe();
        for _ in 0..3 {
            assert!(matches!(events.recv().await.unwrap(), ClusterEvent::NodeUp(_)));
        }
        let (victim, cluster) = all.pop().unwrap();
        let victim_id = victim.id();
        drop((victim, cluster));
        match events.recv().await.unwrap() {
            ClusterEvent::NodeLeft(member) => assert_eq!(member.id, victim_id),
            other => panic!("expected NodeLeft, got {other:?}"),
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_connect_on_demand_and_a_ref_travels_five_nodes() {
    within(T, async {
        let all = cluster_of(5).await;
        // Nothing published in the registry: no member connects to another.
        for (node, _) in &all {
            assert!(node.peers().is_empty(), "no connection before one is needed");
        }
        let mut refs = Vec::new();
        for (i, (node, _)) in all.iter().enumerate() {
            refs.push(node.export(Some("actor"), actor(i as u64)).unwrap());
        }
        // A lookup on a member never dialed by hand connects to it.
        let (first, _) = &all[0];
        let on_last: RemoteRef<Msg> = first.lookup(all[4].0.id(), "actor").await.unwrap();
        assert_eq!(on_last.ask(Msg::Get, T).await.unwrap(), 4);

        // The ref to node 0's actor travels 0 → 1 → 2 → 3 → 4, and 4 asks it.
        let mut chain = Vec::new();
        for (node, _) in &all[1..] {
            chain.push(first.lookup::<Msg>(node.id(), "actor").await.unwrap());
        }
        let target = refs[0].clone();
        let head = chain.remove(0);
        let (done, answer) = ReplyPort::channel();
        head.tell(Msg::Relay { target, chain, done }).await.unwrap();
        assert_eq!(answer.await.unwrap(), 0, "the fifth node asked the first's actor");
        // It did so over a connection of its own, made on demand.
        let last = all[4].0.clone();
        let first_id = first.id();
        eventually("node 4 connected to node 0", T, move || last.peers().contains(&first_id)).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gossip_without_the_cookie_changes_no_view() {
    within(T, async {
        let all = cluster_of(3).await;
        let before: Vec<_> = all.iter().map(|(_, c)| c.members()).collect();
        let rejected_before: u64 = all.iter().map(|(_, c)| c.stats().rejected).sum();
        // An outsider with another cookie, seeded with every member.
        let seeds: Vec<SocketAddr> = all.iter().map(|(_, c)| c.me().addr).collect();
        let (_intruder, ci) = member("intruder", config(Some(Cookie::new([7u8; 32]))), &seeds).await;
        let all_ = all.iter().map(|(_, c)| c.clone()).collect::<Vec<_>>();
        eventually("every member rejected the outsider's gossip", T, move || {
            all_.iter().map(|c| c.stats().rejected).sum::<u64>() >= rejected_before + 3
        })
        .await;
        let after: Vec<_> = all.iter().map(|(_, c)| c.members()).collect();
        assert_eq!(before, after, "views unchanged");
        assert!(ci.members().is_empty(), "the outsider learned nobody");
        assert_eq!(ci.stats().received, 0, "no member's gossip opened with the outsider's key");
    })
    .await;
}

/// The overflow rule: a subscriber that falls more than `event_buffer`
/// events behind is told how many it missed, then goes on with the newest;
/// the view itself misses nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_falls_behind_is_told_how_many_it_missed() {
    within(T, async {
        let node = Node::new(Some("observer"), config(Some(cookie()))).unwrap();
        let addr = node.listen("127.0.0.1:0").await.unwrap();
        let mut cfg = ClusterConfig::default();
        cfg.event_buffer = 2;
        let observer = Cluster::join(&node, addr, cfg).await.unwrap();
        let mut slow = observer.subscribe();
        let mut joined = Vec::new();
        for i in 0..5 {
            joined.push(member(&format!("j{i}"), config(Some(cookie())), &[addr]).await);
        }
        let ids: HashSet<NodeId> = joined.iter().map(|(n, _)| n.id()).collect();
        let view = observer.clone();
        let want = ids.clone();
        eventually("the observer's view has every member", T, move || up(&view) == want).await;
        assert_eq!(slow.recv().await, Err(EventsError::Lagged(3)), "5 events, 2 kept");
        let mut rest = HashSet::new();
        for _ in 0..2 {
            match slow.recv().await.unwrap() {
                ClusterEvent::NodeUp(m) => rest.insert(m.id),
                other => panic!("expected NodeUp, got {other:?}"),
            };
        }
        assert!(rest.is_subset(&ids));
    })
    .await;
}

/// Lookups of a member that cannot be connected to share one dial and its
/// typed error: four at once all fail after one handshake timeout, not one
/// after another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_of_an_unreachable_member_share_one_dial_and_say_why() {
    within(T, async {
        let mut cfg = Config::default();
        cfg.handshake_timeout = std::time::Duration::from_secs(1);
        let a = Node::new(Some("a"), cfg).unwrap();
        let a_addr = a.listen("127.0.0.1:0").await.unwrap();
        let ca = Cluster::join(&a, a_addr, ClusterConfig::default()).await.unwrap();
        // B gossips, but its TCP port is a listener nobody serves.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let b = Node::new(Some("b"), Config::default()).unwrap();
        let _cb = Cluster::join(&b, silent.local_addr().unwrap(), ClusterConfig::default().seed(a_addr)).await.unwrap();
        let b_id = b.id();
        let view = ca.clone();
        eventually("b is up", T, move || up(&view).contains(&b_id)).await;
        let started = tokio::time::Instant::now();
        let lookups = (0..4).map(|_| {
            let a = a.clone();
            tokio::spawn(async move { a.lookup::<Msg>(b_id, "actor").await })
        });
        for lookup in lookups.collect::<Vec<_>>() {
            match lookup.await.unwrap() {
                Err(tether::RemoteError::ConnectFailed { node, .. }) => assert_eq!(node, b_id),
                other => panic!("expected ConnectFailed, got {other:?}"),
            }
        }
        let took = started.elapsed();
        assert!(took < Duration::from_secs(2), "four lookups took {took:?}: they did not share the dial");
    })
    .await;
}
