//! Cluster events delivered to a ractor actor, over real UDP and TCP.

use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tether::cluster::{Cluster, ClusterConfig, ClusterEvent, EventsError};
use tether::{Config, Node};
use tether_test_support::within;
use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};

const T: Duration = Duration::from_secs(20);

/// Hands every update it receives to the test.
struct Follower;

enum FollowerMsg {
    Members(Result<ClusterEvent, EventsError>),
}

impl Actor for Follower {
    type Msg = FollowerMsg;
    type State = UnboundedSender<Result<ClusterEvent, EventsError>>;
    type Arguments = UnboundedSender<Result<ClusterEvent, EventsError>>;

    async fn pre_start(&self, _: ActorRef<Self::Msg>, out: Self::Arguments) -> Result<Self::State, ActorProcessingErr> {
        Ok(out)
    }

    async fn handle(
        &self,
        _: ActorRef<Self::Msg>,
        msg: Self::Msg,
        out: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let FollowerMsg::Members(update) = msg;
        let _ = out.send(update);
        Ok(())
    }
}

async fn member(name: &str, seed: Option<std::net::SocketAddr>) -> (Node, Cluster) {
    let node = Node::new(Some(name), Config::default()).unwrap();
    let addr = node.listen("127.0.0.1:0").await.unwrap();
    let cfg = match seed {
        Some(s) => ClusterConfig::default().seed(s),
        None => ClusterConfig::default(),
    };
    let cluster = Cluster::join(&node, addr, cfg).await.unwrap();
    (node, cluster)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ractor_actor_hears_members_join_and_leave() {
    within(T, async {
        let (_a, ca) = member("a", None).await;
        let (tx, mut rx) = unbounded_channel();
        let (follower, _) = Actor::spawn(None, Follower, tx).await.unwrap();
        tether_ractor::subscribe(&ca, follower.clone(), FollowerMsg::Members);

        let (b, _cb) = member("b", Some(ca.me().addr)).await;
        match rx.recv().await.unwrap() {
            Ok(ClusterEvent::NodeUp(m)) => assert_eq!(m.id, b.id()),
            other => panic!("expected NodeUp for b, got {other:?}"),
        }
        b.shutdown().await;
        match rx.recv().await.unwrap() {
            Ok(ClusterEvent::NodeLeft(m)) => assert_eq!(m.id, b.id()),
            other => panic!("expected NodeLeft for b, got {other:?}"),
        }
        follower.stop(None);
    })
    .await;
}
