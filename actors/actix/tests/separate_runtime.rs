//! The tether nodes run on their own multi-threaded tokio runtime while
//! the actors live in an actix `System` on this thread.

use std::time::Duration;

use actix::prelude::*;
use serde::{Deserialize, Serialize};
use tether::{Config, Node, WatchEvent};
use tether_actix::{export, lookup};
use tether_test_support::within;

#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "u64")]
enum Tally {
    Add(u64),
    Get,
    Stop,
}

#[derive(Default)]
struct Tallier(u64);

impl Actor for Tallier {
    type Context = Context<Self>;
}

impl Handler<Tally> for Tallier {
    type Result = u64;

    fn handle(&mut self, t: Tally, ctx: &mut Context<Self>) -> u64 {
        match t {
            Tally::Add(n) => self.0 += n,
            Tally::Get => {}
            Tally::Stop => ctx.stop(),
        }
        self.0
    }
}

#[test]
fn nodes_on_their_own_runtime_serve_actors_in_a_system() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    // Listening, dialing and the connection drivers live on `rt`.
    let (a, b, b_id) = rt.block_on(async {
        let a = Node::new(Some("a"), Config::default()).unwrap();
        let b = Node::new(Some("b"), Config::default()).unwrap();
        let addr = b.listen("127.0.0.1:0").await.unwrap();
        let b_id = a.connect(&addr.to_string()).await.unwrap();
        (a, b, b_id)
    });

    System::new().block_on(async move {
        within(Duration::from_secs(30), async move {
            // Exported from the System, looked up and used from it.
            export(&b, Some("tally"), Tallier::default().start()).unwrap();
            let tally = lookup::<Tally>(&a, b_id, "tally").await.unwrap();
            for _ in 0..1_000 {
                tally.tell(Tally::Add(1)).await.unwrap();
            }
            assert_eq!(tally.send(Tally::Get).await.unwrap(), 1_000);
            let monitor = tally.monitor();
            tally.do_send(Tally::Stop);
            assert_eq!(monitor.await, WatchEvent::Stopped { reason: None });
        })
        .await;
    });
    drop(rt);
}
