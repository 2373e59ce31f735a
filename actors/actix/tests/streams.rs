//! Streaming replies and open requests between actix actors on two tether
//! nodes over TCP: the handler spawns the work on its context, and an
//! actor takes the replies into its mailbox with `add_stream`.

use std::time::Duration;

use actix::prelude::*;
use serde::{Deserialize, Serialize};
use tether::{AskError, Config, Node, ReplyStream, RequestPort};
use tether_actix::{export, lookup};
use tether_test_support::within;
use tokio::sync::mpsc;

const T: Duration = Duration::from_secs(30);

/// Lines 0..n, then the end.
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "()")]
struct Tail {
    n: u32,
    lines: ReplyStream<String>,
}

/// Numbers come in; the running sum goes back after each; the count is
/// the response.
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "()")]
struct Sum {
    port: RequestPort<u64, u64, u32>,
}

struct Log;

impl Actor for Log {
    type Context = Context<Self>;
}

impl Handler<Tail> for Log {
    type Result = ();

    fn handle(&mut self, Tail { n, lines }: Tail, ctx: &mut Context<Self>) {
        ctx.spawn(
            async move {
                for i in 0..n {
                    if lines.send(format!("line {i}")).await.is_err() {
                        return;
                    }
                }
                lines.end().await;
            }
            .into_actor(self),
        );
    }
}

impl Handler<Sum> for Log {
    type Result = ();

    fn handle(&mut self, Sum { mut port }: Sum, ctx: &mut Context<Self>) {
        ctx.spawn(
            async move {
                let (mut sum, mut count) = (0, 0);
                while let Ok(Some(n)) = port.recv().await {
                    sum += n;
                    count += 1;
                    if port.send(sum).await.is_err() {
                        return;
                    }
                }
                let _ = port.respond(count).await;
            }
            .into_actor(self),
        );
    }
}

/// Takes a stream of replies into its mailbox and reports each, then the end.
struct Reader(mpsc::UnboundedSender<Option<Result<String, String>>>);

impl Actor for Reader {
    type Context = Context<Self>;
}

impl StreamHandler<Result<String, AskError>> for Reader {
    fn handle(&mut self, line: Result<String, AskError>, _: &mut Context<Self>) {
        let _ = self.0.send(Some(line.map_err(|e| e.to_string())));
    }

    fn finished(&mut self, _: &mut Context<Self>) {
        let _ = self.0.send(None);
    }
}

async fn log_on_b() -> (Node, Node, tether_actix::RemoteAddr<Tail>, tether_actix::RemoteAddr<Sum>) {
    let a = Node::new(Some("a"), Config::default()).unwrap();
    let b = Node::new(Some("b"), Config::default()).unwrap();
    let addr = b.listen("127.0.0.1:0").await.unwrap();
    let b_id = a.connect(&addr.to_string()).await.unwrap();
    let log = Log.start();
    export::<Log, Tail>(&b, Some("tail"), log.clone()).unwrap();
    export::<Log, Sum>(&b, Some("sum"), log).unwrap();
    let tail = lookup::<Tail>(&a, b_id, "tail").await.unwrap();
    let sum = lookup::<Sum>(&a, b_id, "sum").await.unwrap();
    (a, b, tail, sum)
}

#[actix::test]
async fn an_actor_reads_a_remote_stream_of_replies_with_add_stream() {
    within(T, async {
        let (_a, _b, tail, _) = log_on_b().await;
        let replies = tail.ask_stream(|lines| Tail { n: 500, lines }).await.unwrap();
        let (tx, mut seen) = mpsc::unbounded_channel();
        let _reader = Reader::create(|ctx| {
            ctx.add_stream(replies);
            Reader(tx)
        });
        for i in 0..500 {
            assert_eq!(seen.recv().await.unwrap(), Some(Ok(format!("line {i}"))));
        }
        assert_eq!(seen.recv().await.unwrap(), None, "the stream's end reaches the actor as `finished`");
    })
    .await;
}

#[actix::test]
async fn an_open_request_to_an_actix_actor() {
    within(T, async {
        let (_a, _b, _, sum) = log_on_b().await;
        let mut open = sum.open_request(|port| Sum { port }).await.unwrap();
        let mut expected = 0;
        for n in 1..=50u64 {
            open.send(n).await.unwrap();
            expected += n;
            assert_eq!(open.recv().await.unwrap(), Some(expected));
        }
        open.close();
        assert_eq!(open.response().await.unwrap(), 50);
    })
    .await;
}
