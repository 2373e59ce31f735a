//! Cancellation reaches the handler: when an asker drops its ask, or its
//! timeout passes, the remote handler's `ReplyPort::cancelled` resolves,
//! within two round trips of the drop (the asker's node sends its `Stop` at
//! once instead of batching it with later output), over real TCP.

mod common;

use std::time::{Duration, Instant};

use common::{within, TaskMailbox};
use serde::{Deserialize, Serialize};
use tether::{AskError, Config, Node, NodeId, RemoteRef, ReplyPort};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

const T: Duration = Duration::from_secs(30);

/// `Job(0, _)` is answered at once; any other is long work that only
/// cancellation ends.
#[derive(Serialize, Deserialize)]
struct Job(u64, ReplyPort<u64>);

/// What the worker tells the test: a long job started, or was cancelled
/// (and when the handler heard it).
enum Seen {
    Started,
    Cancelled(Instant),
}

async fn worker() -> (Node, Node, NodeId, RemoteRef<Job>, UnboundedReceiver<Seen>) {
    let owner = Node::new(Some("owner"), Config::default()).unwrap();
    let addr = owner.listen("127.0.0.1:0").await.unwrap();
    let (tx, mut jobs) = unbounded_channel::<Job>();
    owner.export(Some("worker"), TaskMailbox(tx)).unwrap();
    let (seen_tx, seen) = unbounded_channel();
    tokio::spawn(async move {
        while let Some(Job(n, reply)) = jobs.recv().await {
            if n == 0 {
                let _ = reply.send(0);
                continue;
            }
            let seen = seen_tx.clone();
            tokio::spawn(async move {
                let _ = seen.send(Seen::Started);
                tokio::select! {
                    () = reply.cancelled() => drop(seen.send(Seen::Cancelled(Instant::now()))),
                    () = tokio::time::sleep(T) => drop(reply.send(n)),
                }
            });
        }
    });
    let asker = Node::new(Some("asker"), Config::default()).unwrap();
    let owner_id = asker.connect(&addr.to_string()).await.unwrap();
    let job = asker.lookup::<Job>(owner_id, "worker").await.unwrap();
    (asker, owner, owner_id, job, seen)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

async fn started(seen: &mut UnboundedReceiver<Seen>) {
    assert!(matches!(seen.recv().await, Some(Seen::Started)));
}

async fn cancelled(seen: &mut UnboundedReceiver<Seen>) -> Instant {
    match seen.recv().await {
        Some(Seen::Cancelled(at)) => at,
        _ => panic!("expected the handler to hear the cancellation"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_ask_reaches_the_handler_within_two_round_trips() {
    within(T, async {
        let (_asker, _owner, _, job, mut seen) = worker().await;
        // A round trip, as an ask answered at once measures it.
        let mut rtts = Vec::new();
        for _ in 0..21 {
            let t = Instant::now();
            assert_eq!(job.ask(|reply| Job(0, reply), Duration::from_secs(5)).await.unwrap(), 0);
            rtts.push(t.elapsed());
        }
        let rtt = median(rtts);

        // Medians of several tries, so one descheduled thread on a busy
        // machine does not decide.
        let mut heard = Vec::new();
        for _ in 0..7 {
            let mut ask = Box::pin(job.ask(|reply| Job(1, reply), T));
            tokio::select! {
                res = &mut ask => panic!("the long job was answered: {res:?}"),
                () = started(&mut seen) => {}
            }
            let dropped = Instant::now();
            drop(ask);
            heard.push(cancelled(&mut seen).await - dropped);
        }
        let heard = median(heard);
        assert!(heard <= 2 * rtt, "the handler heard of the drop after {heard:?}; a round trip takes {rtt:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ask_that_times_out_cancels_its_handler() {
    within(T, async {
        let (_asker, _owner, _, job, mut seen) = worker().await;
        let limit = Duration::from_millis(100);
        let asked = Instant::now();
        let res = job.ask(|reply| Job(1, reply), limit).await;
        assert!(matches!(res, Err(AskError::Timeout(_))), "{res:?}");
        started(&mut seen).await;
        let at = cancelled(&mut seen).await;
        assert!(at - asked >= limit, "not before the timeout");
    })
    .await;
}
