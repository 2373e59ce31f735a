//! Cluster-wide names (`registry`) and process groups (`pg`) for ractor
//! actors: three members in one process, over real UDP and TCP on loopback.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use serde::{Deserialize, Serialize};
use tether::cluster::{Cluster, ClusterConfig, EventsError, MemberStatus};
use tether::{Config, Node, NodeId, ReplyPort};
use tether_ractor::pg::{self, GroupChangeMessage};
use tether_ractor::registry;
use tether_test_support::{eventually, within};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

const T: Duration = Duration::from_secs(30);
const CALL: Duration = Duration::from_secs(5);

#[derive(Serialize, Deserialize, Debug)]
enum WorkerMsg {
    /// Reported to the test as (name, n).
    Num(u64),
    /// Answered with the worker's name.
    Who(ReplyPort<String>),
}

/// For broadcasts, which clone the message for each member; only `Num` is
/// broadcast (a reply port answers one asker).
impl Clone for WorkerMsg {
    fn clone(&self) -> Self {
        match self {
            WorkerMsg::Num(n) => WorkerMsg::Num(*n),
            WorkerMsg::Who(_) => unreachable!("requests are not broadcast"),
        }
    }
}

struct Worker;

impl Actor for Worker {
    type Msg = WorkerMsg;
    type State = (String, UnboundedSender<(String, u64)>);
    type Arguments = (String, UnboundedSender<(String, u64)>);

    async fn pre_start(
        &self,
        _: ActorRef<WorkerMsg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(args)
    }

    async fn handle(
        &self,
        _: ActorRef<WorkerMsg>,
        msg: WorkerMsg,
        (name, seen): &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            WorkerMsg::Num(n) => {
                let _ = seen.send((name.clone(), n));
            }
            WorkerMsg::Who(reply) => {
                let _ = reply.send(name.clone());
            }
        }
        Ok(())
    }
}

async fn worker(name: &str, seen: &UnboundedSender<(String, u64)>) -> ActorRef<WorkerMsg> {
    Actor::spawn(None, Worker, (name.to_owned(), seen.clone())).await.unwrap().0
}

/// Hands every group change it receives to the test.
struct Watcher;

enum WatcherMsg {
    Changed(Result<GroupChangeMessage, EventsError>),
}

impl Actor for Watcher {
    type Msg = WatcherMsg;
    type State = UnboundedSender<Result<GroupChangeMessage, EventsError>>;
    type Arguments = UnboundedSender<Result<GroupChangeMessage, EventsError>>;

    async fn pre_start(
        &self,
        _: ActorRef<WatcherMsg>,
        out: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(out)
    }

    async fn handle(
        &self,
        _: ActorRef<WatcherMsg>,
        WatcherMsg::Changed(change): WatcherMsg,
        out: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let _ = out.send(change);
        Ok(())
    }
}

async fn watcher() -> (ActorRef<WatcherMsg>, UnboundedReceiver<Result<GroupChangeMessage, EventsError>>) {
    let (tx, rx) = unbounded_channel();
    (Actor::spawn(None, Watcher, tx).await.unwrap().0, rx)
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registered_name_is_where_is_from_another_member_and_answers_call() {
    let all = three().await;
    let (seen, _) = unbounded_channel();
    let boss = worker("boss", &seen).await;
    let (registered, _claim) = registry::register(&all[1].1, "boss", boss.clone()).unwrap();
    assert_eq!(registered.id().node, all[1].0.id());

    for (_, c) in [&all[0], &all[2]] {
        let probe = c.clone();
        eventually("the name reaches the member", T, move || probe.lookup_all::<WorkerMsg>("boss").is_ok()).await;
        let found = within(T, registry::where_is::<WorkerMsg>(c, "boss")).await.unwrap().expect("registered");
        assert_eq!(found, registered);
        assert_eq!(within(T, found.ask(WorkerMsg::Who, CALL)).await.unwrap(), "boss");
    }
    assert!(within(T, registry::where_is::<WorkerMsg>(&all[2].1, "nobody")).await.unwrap().is_none());

    // The same actor registered again keeps its one export.
    let (again, _) = registry::register(&all[1].1, "boss-too", boss.clone()).unwrap();
    assert_eq!(again, registered);

    // Given up, it is gone everywhere; so is a name whose actor stops.
    assert!(registry::unregister(&all[1].1, "boss"));
    boss.stop(None);
    let c = all[0].1.clone();
    eventually("both names are gone", T, move || {
        c.lookup_all::<WorkerMsg>("boss").is_err() && c.lookup_all::<WorkerMsg>("boss-too").is_err()
    })
    .await;
    assert!(within(T, registry::where_is::<WorkerMsg>(&all[0].1, "boss-too")).await.unwrap().is_none());
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

/// A group's `cast` keeps ractor's meaning as `RemoteActorRef::cast`
/// does: a stream that outruns the member's window waits in the outbox,
/// and all of it arrives, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_groups_cast_loses_nothing_when_it_outruns_the_window() {
    let first = member("m0", None).await;
    let second = member("m1", Some(first.1.me().addr)).await;
    let (seen_tx, mut seen) = unbounded_channel();
    pg::join(&first.1, "workers", vec![worker("w0", &seen_tx).await]).unwrap();
    let c = second.1.clone();
    eventually("the other member sees the worker", T, move || pg::get_members::<WorkerMsg>(&c, "workers").len() == 1)
        .await;

    let workers = pg::group::<WorkerMsg>(&second.1, "workers");
    const N: u64 = 100_000;
    let mut queued = false;
    for n in 0..N {
        workers.cast(WorkerMsg::Num(n)).unwrap();
        queued |= second.0.stats().outbox_held > 0;
    }
    assert!(queued, "the window took everything: nothing was queued");
    for n in 0..N {
        assert_eq!(within(T, seen.recv()).await.unwrap(), ("w0".to_owned(), n));
    }
    let stats = second.0.stats();
    assert_eq!((stats.outbox_held, stats.outbox_refused, stats.outbox_undelivered), (0, 0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_joined_on_two_nodes_are_seen_and_served_round_robin_from_the_third() {
    let all = three().await;
    let (seen_tx, mut seen) = unbounded_channel();
    let w0 = worker("w0", &seen_tx).await;
    let w1 = worker("w1", &seen_tx).await;
    let r0 = pg::join(&all[0].1, "workers", vec![w0.clone()]).unwrap();
    // Joining again keeps one export: still one member.
    assert_eq!(pg::join(&all[0].1, "workers".to_owned(), vec![w0.clone()]).unwrap(), r0);
    let r1 = pg::join(&all[1].1, "workers", vec![w1.clone()]).unwrap();
    assert_eq!(pg::get_local_members::<WorkerMsg>(&all[0].1, "workers"), r0);
    assert_eq!(pg::get_local_members::<WorkerMsg>(&all[1].1, "workers"), r1);

    let c = all[2].1.clone();
    eventually("the third member sees both workers", T, move || pg::get_members::<WorkerMsg>(&c, "workers").len() == 2)
        .await;
    let members: HashSet<_> = pg::get_members::<WorkerMsg>(&all[2].1, "workers").iter().map(|m| m.id()).collect();
    assert_eq!(members, HashSet::from([r0[0].id(), r1[0].id()]));
    assert!(pg::get_local_members::<WorkerMsg>(&all[2].1, "workers").is_empty());

    // `call` goes to each member in turn.
    let workers = pg::group::<WorkerMsg>(&all[2].1, "workers");
    let mut answers = Vec::new();
    for _ in 0..6 {
        answers.push(within(T, workers.ask(WorkerMsg::Who, CALL)).await.unwrap());
    }
    assert_eq!(answers.iter().collect::<HashSet<_>>(), HashSet::from([&"w0".to_owned(), &"w1".to_owned()]));
    for pair in answers.windows(2) {
        assert_ne!(pair[0], pair[1], "round robin: {answers:?}");
    }

    // A broadcast reaches every member once.
    let report = within(T, workers.broadcast(WorkerMsg::Num(100))).await;
    assert_eq!(report.sent, 2, "{report:?}");
    let by = reports(&mut seen, 2).await;
    assert_eq!(by, HashMap::from([("w0".to_owned(), vec![100]), ("w1".to_owned(), vec![100])]));

    // One member leaves; calls go to the other only.
    assert_eq!(pg::leave(&all[1].1, "workers", vec![w1.clone()]), 1);
    assert_eq!(pg::leave(&all[1].1, "workers", vec![w1.clone()]), 0);
    let c = all[2].1.clone();
    eventually("the leave reaches the third member", T, move || pg::get_members::<WorkerMsg>(&c, "workers").len() == 1)
        .await;
    for _ in 0..4 {
        assert_eq!(within(T, workers.ask(WorkerMsg::Who, CALL)).await.unwrap(), "w0");
    }

    // Scopes keep groups apart.
    pg::join_scoped(&all[1].1, "other", "workers", vec![w1]).unwrap();
    let c = all[2].1.clone();
    eventually("the scoped group arrives", T, move || {
        pg::get_scoped_members::<WorkerMsg>(&c, "other", "workers").len() == 1
    })
    .await;
    assert_eq!(pg::get_members::<WorkerMsg>(&all[2].1, "workers"), r0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitor_reports_a_join_and_a_stopped_member_leaves_get_members() {
    let all = three().await;
    let (watching, mut changes) = watcher().await;
    pg::monitor(&all[2].1, "watched", watching.clone(), WatcherMsg::Changed);
    // Monitoring again changes nothing: each change comes once.
    pg::monitor(&all[2].1, "watched", watching.clone(), WatcherMsg::Changed);

    let (seen, _) = unbounded_channel();
    let w = worker("w", &seen).await;
    let joined = pg::join(&all[0].1, "watched", vec![w.clone()]).unwrap().remove(0);
    let change = within(T, changes.recv()).await.unwrap().unwrap();
    assert_eq!(change, GroupChangeMessage::Join(pg::DEFAULT_SCOPE.into(), "watched".into(), vec![joined.id()]));
    assert_eq!(change.get_group(), "watched");

    // The member's actor stops: it leaves.
    w.stop(None);
    let change = within(T, changes.recv()).await.unwrap().unwrap();
    assert_eq!(change, GroupChangeMessage::Leave(pg::DEFAULT_SCOPE.into(), "watched".into(), vec![joined.id()]));
    assert!(pg::get_members::<WorkerMsg>(&all[2].1, "watched").is_empty());
    let c = all[1].1.clone();
    eventually("every member drops it", T, move || pg::get_members::<WorkerMsg>(&c, "watched").is_empty()).await;
    assert!(changes.try_recv().is_err(), "each change came once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demonitor_stops_the_reports_and_a_new_monitor_starts_with_the_members() {
    let all = three().await;
    let (stays, mut stays_changes) = watcher().await;
    let (goes, mut goes_changes) = watcher().await;
    pg::monitor_scoped(&all[2].1, "s", "g", stays.clone(), WatcherMsg::Changed);
    pg::monitor_scoped(&all[2].1, "s", "g", goes.clone(), WatcherMsg::Changed);
    pg::demonitor_scoped(&all[2].1, "s", "g", goes.get_id());

    let (seen, _) = unbounded_channel();
    let w = worker("w", &seen).await;
    let joined = pg::join_scoped(&all[0].1, "s", "g", vec![w.clone()]).unwrap().remove(0);
    let join = GroupChangeMessage::Join("s".into(), "g".into(), vec![joined.id()]);
    assert_eq!(within(T, stays_changes.recv()).await.unwrap().unwrap(), join);

    // Monitored anew (not refused as a duplicate), the actor hears of the
    // member now, then of its leave, and nothing from the old monitor.
    pg::monitor_scoped(&all[2].1, "s", "g", goes.clone(), WatcherMsg::Changed);
    assert_eq!(within(T, goes_changes.recv()).await.unwrap().unwrap(), join);
    w.stop(None);
    let leave = GroupChangeMessage::Leave("s".into(), "g".into(), vec![joined.id()]);
    assert_eq!(within(T, goes_changes.recv()).await.unwrap().unwrap(), leave);
    assert_eq!(within(T, stays_changes.recv()).await.unwrap().unwrap(), leave);
}
