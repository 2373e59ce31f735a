//! Cluster-wide names and process groups for actix actors: three members in
//! one process, over real UDP and TCP on loopback, one actix system.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::Duration;

use actix::prelude::*;
use serde::{Deserialize, Serialize};
use tether::cluster::{Cluster, ClusterConfig, GroupEvent, GroupKey, MemberStatus, RegistryError};
use tether::{Config, Node, NodeId, RemoteError, TellError};
use tether_actix::{GroupUpdate, RemoteMailboxError};
use tether_test_support::{eventually, within};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

const T: Duration = Duration::from_secs(30);

#[derive(Message, Serialize, Deserialize, Debug, Clone)]
#[rtype(result = "String")]
enum Job {
    /// Answered with the worker's name.
    Who,
    /// Reported to the test as (name, n).
    Num(u64),
    Stop,
}

struct Worker {
    name: String,
    seen: UnboundedSender<(String, u64)>,
}

impl Actor for Worker {
    type Context = Context<Self>;
}

impl Handler<Job> for Worker {
    type Result = String;

    fn handle(&mut self, job: Job, ctx: &mut Context<Self>) -> String {
        match job {
            Job::Who => {}
            Job::Num(n) => {
                let _ = self.seen.send((self.name.clone(), n));
            }
            Job::Stop => ctx.stop(),
        }
        self.name.clone()
    }
}

fn worker(name: &str, seen: &UnboundedSender<(String, u64)>) -> Addr<Worker> {
    Worker { name: name.to_owned(), seen: seen.clone() }.start()
}

/// Hands every group update it receives to the test.
struct Watcher(UnboundedSender<GroupUpdate>);

impl Actor for Watcher {
    type Context = Context<Self>;
}

impl Handler<GroupUpdate> for Watcher {
    type Result = ();
    fn handle(&mut self, update: GroupUpdate, _: &mut Context<Self>) {
        let _ = self.0.send(update);
    }
}

async fn member(name: &str, seed: Option<SocketAddr>) -> (Node, Cluster) {
    let node = Node::new(Some(name), Config::default()).unwrap();
    let addr = node.listen("127.0.0.1:0").await.unwrap();
    let cfg = match seed {
        Some(s) => ClusterConfig::default().seed(s),
        None => ClusterConfig::default(),
    };
    let cluster = Cluster::join(&node, addr, cfg).await.unwrap();
    (node, cluster)
}

/// Three members that all know each other.
async fn three() -> Vec<(Node, Cluster)> {
    let first = member("m0", None).await;
    let seed = first.1.me().addr;
    let all = vec![first, member("m1", Some(seed)).await, member("m2", Some(seed)).await];
    let ids: Vec<NodeId> = all.iter().map(|(n, _)| n.id()).collect();
    for (node, c) in &all {
        let others: HashSet<NodeId> = ids.iter().copied().filter(|i| *i != node.id()).collect();
        let c = c.clone();
        eventually("every member knows every other", T, move || {
            c.members().into_iter().filter(|m| m.status == MemberStatus::Up).map(|m| m.id).collect::<HashSet<_>>()
                == others
        })
        .await;
    }
    all
}

#[actix::test]
async fn a_registered_name_is_found_from_another_member_and_answers_send() {
    let all = three().await;
    let (seen, _) = unbounded_channel();
    let boss = worker("boss", &seen);
    let (registered, _claim) = tether_actix::register::<_, Job>(&all[1].1, "boss", boss.clone()).unwrap();
    assert_eq!(registered.id().node, all[1].0.id());

    for (_, c) in [&all[0], &all[2]] {
        let probe = c.clone();
        eventually("the name reaches the member", T, move || tether_actix::lookup_all::<Job>(&probe, "boss").is_ok())
            .await;
        let found = within(T, tether_actix::lookup_name::<Job>(c, "boss")).await.unwrap();
        assert_eq!(found, registered);
        // actix's `send`, answered with the handler's result.
        assert_eq!(within(T, found.send(Job::Who)).await.unwrap(), "boss");
    }

    // Another actor cannot take the name while it is held.
    let other = worker("other", &seen);
    match tether_actix::register::<_, Job>(&all[2].1, "boss", other) {
        Err(RegistryError::Taken { holder, .. }) => assert_eq!(holder, registered.id()),
        other => panic!("expected Taken, got {:?}", other.map(|(r, _)| r)),
    }
    // Nor is a name nobody holds found.
    assert!(matches!(
        within(T, tether_actix::lookup_name::<Job>(&all[2].1, "nobody")).await,
        Err(RemoteError::NotFound(_))
    ));

    // Given up, it is gone everywhere.
    assert!(tether_actix::unregister(&all[1].1, "boss"));
    let c = all[0].1.clone();
    eventually("the name is gone", T, move || {
        matches!(tether_actix::lookup_all::<Job>(&c, "boss"), Err(RemoteError::NotFound(_)))
    })
    .await;
}

/// Takes `n` reports, by worker.
async fn reports(seen: &mut UnboundedReceiver<(String, u64)>, n: usize) -> HashMap<String, Vec<u64>> {
    let mut by = HashMap::<String, Vec<u64>>::new();
    for _ in 0..n {
        let (who, k) = within(T, seen.recv()).await.unwrap();
        by.entry(who).or_default().push(k);
    }
    by
}

#[actix::test]
async fn a_group_joined_on_two_members_is_served_round_robin_from_the_third() {
    let all = three().await;
    let (seen_tx, mut seen) = unbounded_channel();
    let w0 = worker("w0", &seen_tx);
    let w1 = worker("w1", &seen_tx);
    let r0 = tether_actix::join_group::<_, Job>(&all[0].1, "workers", w0.clone()).unwrap();
    // Joining again, or claiming a name, keeps one export: one member.
    assert_eq!(tether_actix::join_group::<_, Job>(&all[0].1, "workers", w0.clone()).unwrap(), r0);
    let (named, _claim) = tether_actix::register::<_, Job>(&all[0].1, "w0", w0.clone()).unwrap();
    assert_eq!(named, r0);
    let r1 = tether_actix::join_group::<_, Job>(&all[1].1, "workers", w1.clone()).unwrap();

    let c = all[2].1.clone();
    eventually("the third member sees both workers", T, move || {
        tether_actix::group_members::<Job>(&c, "workers").len() == 2
    })
    .await;
    let members: HashSet<_> = tether_actix::group_members::<Job>(&all[2].1, "workers").iter().map(|m| m.id()).collect();
    assert_eq!(members, HashSet::from([r0.id(), r1.id()]));

    // `send` goes to each member in turn, and answers with its handler's result.
    let workers = tether_actix::group::<Job>(&all[2].1, "workers");
    let mut answers = Vec::new();
    for _ in 0..6 {
        answers.push(within(T, workers.send(Job::Who)).await.unwrap());
    }
    assert_eq!(answers.iter().collect::<HashSet<_>>(), HashSet::from([&"w0".to_owned(), &"w1".to_owned()]));
    for pair in answers.windows(2) {
        assert_ne!(pair[0], pair[1], "round robin: {answers:?}");
    }

    // So does `do_send`, in order per member.
    for n in 0..10 {
        workers.do_send(Job::Num(n));
    }
    let by = reports(&mut seen, 10).await;
    assert_eq!(by.len(), 2, "{by:?}");
    for got in by.values() {
        assert_eq!(got.len(), 5, "{by:?}");
        assert!(got.windows(2).all(|p| p[0] < p[1]), "{by:?}");
    }
    assert_eq!(workers.dropped(), 0);

    // A broadcast reaches every member once.
    let report = within(T, workers.broadcast(Job::Num(100))).await;
    assert_eq!(report.sent, 2, "{report:?}");
    let by = reports(&mut seen, 2).await;
    assert_eq!(by, HashMap::from([("w0".to_owned(), vec![100]), ("w1".to_owned(), vec![100])]));

    // Keyed sends stay with one member per key.
    let first = within(T, workers.send_keyed(&"user-17", Job::Who)).await.unwrap();
    for _ in 0..5 {
        assert_eq!(within(T, workers.send_keyed(&"user-17", Job::Who)).await.unwrap(), first);
    }

    // A worker leaves; nothing goes to it after.
    assert!(tether_actix::leave_group::<_, Job>(&all[1].1, "workers", &w1));
    assert!(!tether_actix::leave_group::<_, Job>(&all[1].1, "workers", &w1));
    let c = all[2].1.clone();
    eventually("the leave reaches the third member", T, move || {
        tether_actix::group_members::<Job>(&c, "workers").len() == 1
    })
    .await;
    for _ in 0..4 {
        assert_eq!(within(T, workers.send(Job::Who)).await.unwrap(), "w0");
    }

    // Scopes keep groups apart.
    tether_actix::join_group::<_, Job>(&all[1].1, GroupKey::scoped("other", "workers"), w1).unwrap();
    let c = all[2].1.clone();
    eventually("the scoped group arrives", T, move || {
        tether_actix::group_members::<Job>(&c, GroupKey::scoped("other", "workers")).len() == 1
    })
    .await;
    assert_eq!(tether_actix::group_members::<Job>(&all[2].1, "workers"), vec![r0]);
}

#[actix::test]
async fn watch_group_reports_a_join_and_the_leave_of_a_stopped_member() {
    let all = three().await;
    let (updates_tx, mut updates) = unbounded_channel();
    let watcher = Watcher(updates_tx).start();
    let _watch = tether_actix::watch_group(&all[2].1, "watched", watcher.clone());

    let (seen, _) = unbounded_channel();
    let w = worker("w", &seen);
    let joined = tether_actix::join_group::<_, Job>(&all[0].1, "watched", w).unwrap();
    let update = within(T, updates.recv()).await.unwrap();
    assert_eq!(update.group, GroupKey::from("watched"));
    assert_eq!(update.event, Ok(GroupEvent::Joined(joined.id())));

    // The member's actor stops: it leaves, everywhere.
    within(T, joined.send(Job::Stop)).await.unwrap();
    let update = within(T, updates.recv()).await.unwrap();
    assert_eq!(update.event, Ok(GroupEvent::Left(joined.id())));
    assert!(tether_actix::group_members::<Job>(&all[2].1, "watched").is_empty());
    let c = all[1].1.clone();
    eventually("the leave reaches every member", T, move || {
        tether_actix::group_members::<Job>(&c, "watched").is_empty()
    })
    .await;
}

/// A group's `do_send` keeps actix's promise as `RemoteAddr::do_send` does:
/// a stream that outruns the member's window waits in the outbox, and all
/// of it arrives, in order.
#[actix::test]
async fn a_groups_do_send_loses_nothing_when_it_outruns_the_window() {
    let first = member("m0", None).await;
    let second = member("m1", Some(first.1.me().addr)).await;
    let (seen_tx, mut seen) = unbounded_channel();
    tether_actix::join_group::<_, Job>(&first.1, "workers", worker("w0", &seen_tx)).unwrap();
    let c = second.1.clone();
    eventually("the other member sees the worker", T, move || {
        tether_actix::group_members::<Job>(&c, "workers").len() == 1
    })
    .await;

    let workers = tether_actix::group::<Job>(&second.1, "workers");
    const N: u64 = 100_000;
    for n in 0..N {
        workers.do_send(Job::Num(n));
    }
    assert!(second.0.stats().outbox_held > 0, "the window took everything: nothing was queued");
    for n in 0..N {
        assert_eq!(within(T, seen.recv()).await.unwrap(), ("w0".to_owned(), n));
    }
    assert_eq!(workers.dropped(), 0);
    let stats = second.0.stats();
    assert_eq!((stats.outbox_held, stats.outbox_refused, stats.outbox_undelivered), (0, 0, 0));
}

#[actix::test]
async fn sends_to_a_group_without_members_fail_and_do_send_counts_its_drops() {
    let (_node, cluster) = member("alone", None).await;
    let empty = tether_actix::group::<Job>(&cluster, "empty");
    empty.do_send(Job::Num(1));
    empty.do_send(Job::Num(2));
    assert_eq!(empty.dropped(), 2);
    match empty.try_send(Job::Num(3)) {
        Err(TellError::Unreachable { error: RemoteError::NotFound(_), msg: Job::Num(3) }) => {}
        other => panic!("expected NotFound, got {other:?}"),
    }
    match within(T, empty.send(Job::Who)).await {
        Err(RemoteMailboxError::Unreachable(RemoteError::NotFound(name))) => assert_eq!(name, "empty"),
        other => panic!("expected NotFound, got {other:?}"),
    }
    assert_eq!(empty.dropped(), 2, "only do_send counts");
}

/// Tells the test when it stops.
struct Quiet(Option<tokio::sync::oneshot::Sender<()>>);

impl Actor for Quiet {
    type Context = Context<Self>;

    fn stopped(&mut self, _: &mut Context<Self>) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

impl Handler<Job> for Quiet {
    type Result = String;
    fn handle(&mut self, _: Job, _: &mut Context<Self>) -> String {
        "quiet".into()
    }
}

#[actix::test]
async fn dropping_the_node_lets_go_of_actors_it_registered_and_joined() {
    within(T, async {
        let (node, cluster) = member("alone", None).await;
        let (stopped_tx, stopped) = tokio::sync::oneshot::channel();
        let quiet = Quiet(Some(stopped_tx)).start();
        tether_actix::join_group::<_, Job>(&cluster, "g", quiet.clone()).unwrap();
        tether_actix::join_group::<_, Job>(&cluster, "g", quiet.clone()).unwrap();
        let _ = tether_actix::register::<_, Job>(&cluster, "quiet", quiet.clone()).unwrap();
        assert_eq!(tether_actix::group_members::<Job>(&cluster, "g").len(), 1);
        // Its export (and this crate's record of it) hold its `Addr` while the
        // node lives; the node goes, and no `Addr` is left (actix then stops
        // the actor).
        drop(quiet);
        drop(cluster);
        drop(node);
        stopped.await.expect("the actor stopped");
    })
    .await;
}
