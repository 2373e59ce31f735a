//! Streaming replies and open requests to a ractor actor on another tether
//! node over TCP.

mod common;

use common::{two_nodes, within, T};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use serde::{Deserialize, Serialize};
use tether::{ReplyStream, RequestPort};
use tether_ractor::{export, lookup, CallError};

#[derive(Serialize, Deserialize)]
enum Query {
    /// Rows 0..n, then the end.
    Rows(u32, ReplyStream<u32>),
    /// Words come in, their lengths go back, the word count is the response.
    Words(RequestPort<String, usize, u32>),
}

struct Table;

impl Actor for Table {
    type Msg = Query;
    type State = ();
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<Query>, _: ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }

    async fn handle(&self, _: ActorRef<Query>, msg: Query, _: &mut ()) -> Result<(), ActorProcessingErr> {
        // Each request runs in a task of its own, so the actor goes on.
        tokio::spawn(async move {
            match msg {
                Query::Rows(n, rows) => {
                    for i in 0..n {
                        if rows.send(i).await.is_err() {
                            return;
                        }
                    }
                    rows.end().await;
                }
                Query::Words(mut port) => {
                    let mut count = 0;
                    while let Ok(Some(word)) = port.recv().await {
                        count += 1;
                        if port.send(word.len()).await.is_err() {
                            return;
                        }
                    }
                    let _ = port.respond(count).await;
                }
            }
        });
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_and_open_requests_reach_a_ractor_actor() {
    within(T, async {
        let (a, b, b_id) = two_nodes().await;
        let (table, _) = Actor::spawn(None, Table, ()).await.unwrap();
        export(&b, Some("table"), table.clone()).unwrap();
        let remote = lookup::<Query>(&a, b_id, "table").await.unwrap();

        let mut rows = remote.ask_stream(|rows| Query::Rows(1000, rows)).await.unwrap();
        for i in 0..1000 {
            assert_eq!(rows.next().await.unwrap().unwrap(), i);
        }
        assert!(rows.next().await.is_none());

        let mut words = remote.open_request(Query::Words).await.unwrap();
        for word in ["open", "requests", "in", "ractor"] {
            words.send(word.to_string()).await.unwrap();
            assert_eq!(words.recv().await.unwrap(), Some(word.len()));
        }
        words.close();
        assert_eq!(words.response().await.unwrap(), 4);

        // A stopped actor: the request is not sent, and the error says so.
        table.stop(None);
        remote.monitor().await;
        let refused = remote.ask_stream(|rows| Query::Rows(1, rows)).await;
        assert!(matches!(refused, Err(CallError::Unreachable(_))), "{refused:?}");
    })
    .await;
}
