//! Cluster events delivered to an actix actor, over real UDP and TCP.

use std::time::Duration;

use actix::prelude::*;
use tether::cluster::{Cluster, ClusterConfig, ClusterEvent};
use tether::{Config, Node};
use tether_actix::ClusterUpdate;
use tether_test_support::within;
use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};

const T: Duration = Duration::from_secs(20);

/// Hands every update it receives to the test.
struct Follower(UnboundedSender<ClusterUpdate>);

impl Actor for Follower {
    type Context = Context<Self>;
}

impl Handler<ClusterUpdate> for Follower {
    type Result = ();
    fn handle(&mut self, update: ClusterUpdate, _: &mut Context<Self>) {
        let _ = self.0.send(update);
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

#[actix::test]
async fn an_actix_actor_hears_members_join_and_leave() {
    within(T, async {
        let (_a, ca) = member("a", None).await;
        let (tx, mut rx) = unbounded_channel();
        let follower = Follower(tx).start();
        let subscription = tether_actix::subscribe(&ca, follower.clone());

        let (b, _cb) = member("b", Some(ca.me().addr)).await;
        match rx.recv().await.unwrap().0 {
            Ok(ClusterEvent::NodeUp(m)) => assert_eq!(m.id, b.id()),
            other => panic!("expected NodeUp for b, got {other:?}"),
        }
        b.shutdown().await;
        match rx.recv().await.unwrap().0 {
            Ok(ClusterEvent::NodeLeft(m)) => assert_eq!(m.id, b.id()),
            other => panic!("expected NodeLeft for b, got {other:?}"),
        }
        // The subscription does not keep the actor alive: with its last
        // address gone it stops, and the subscription ends at the next event.
        drop(follower);
        assert!(rx.recv().await.is_none(), "the actor stopped");
        let (_c, _cc) = member("c", Some(ca.me().addr)).await;
        subscription.await.unwrap();
    })
    .await;
}
