//! Message tags over real TCP. Two nodes stand for two programs: each
//! declares the message types itself (modules `one` and `two`), and they
//! agree on a type by its tag (`tether::message_tag`), not by its Rust path.

mod common;

use std::time::Duration;

use common::{within, TaskMailbox};
use tether::{message_tag, Config, Node, NodeId, RemoteError, TellError};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

const T: Duration = Duration::from_secs(20);

/// The message types as the first program declares them.
mod one {
    use serde::{Deserialize, Serialize};
    use tether::{RemoteRef, ReplyPort};

    #[derive(Serialize, Deserialize, Debug)]
    pub enum Counter {
        Add(u64),
        Get(ReplyPort<u64>),
    }

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    #[serde(rename = "app.Ping")]
    pub struct Ping {
        pub n: u64,
    }

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    pub struct Job {
        pub id: u64,
    }

    /// Hands a ref over inside a message.
    #[derive(Serialize, Deserialize, Debug)]
    pub enum Hand {
        Job(RemoteRef<Job>),
        Counter(RemoteRef<Counter>),
    }
}

/// The same, as the second program declares them: `Counter` and `Hand`
/// identically, `Ping` under another Rust name with the same serde name,
/// and `Job` with another field set.
mod two {
    use serde::{Deserialize, Serialize};
    use tether::{RemoteRef, ReplyPort};

    #[derive(Serialize, Deserialize, Debug)]
    pub enum Counter {
        Add(u64),
        Get(ReplyPort<u64>),
    }

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    #[serde(rename = "app.Ping")]
    pub struct Pong {
        pub n: u64,
    }

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    pub struct Job {
        pub id: u64,
        pub priority: u8,
    }

    #[derive(Serialize, Deserialize, Debug)]
    pub enum Hand {
        Job(RemoteRef<Job>),
        Counter(RemoteRef<Counter>),
    }
}

async fn two_nodes() -> (Node, Node, NodeId) {
    let a = Node::new(Some("a"), Config::default()).unwrap();
    let b = Node::new(Some("b"), Config::default()).unwrap();
    let addr = b.listen("127.0.0.1:0").await.unwrap();
    let b_id = a.connect(&addr.to_string()).await.unwrap();
    (a, b, b_id)
}

/// An actor that hands what it receives to the test.
fn inbox<M: Send + 'static>() -> (TaskMailbox<M>, UnboundedReceiver<M>) {
    let (tx, rx) = unbounded_channel();
    (TaskMailbox(tx), rx)
}

/// A counter actor taking the second program's `Counter`.
fn counter() -> TaskMailbox<two::Counter> {
    let (mailbox, mut rx) = inbox();
    tokio::spawn(async move {
        let mut total = 0;
        while let Some(msg) = rx.recv().await {
            match msg {
                two::Counter::Add(n) => total += n,
                two::Counter::Get(reply) => {
                    let _ = reply.send(total);
                }
            }
        }
    });
    mailbox
}

#[test]
fn the_twins_have_one_tag_and_two_rust_names() {
    // What the tests below rely on: the Rust types differ, the tags agree
    // (or not) as their names say.
    assert_ne!(std::any::type_name::<one::Counter>(), std::any::type_name::<two::Counter>());
    assert_eq!(message_tag::<one::Counter>(), "Counter{Add|Get}");
    assert_eq!(message_tag::<two::Counter>(), "Counter{Add|Get}");
    assert_eq!(message_tag::<one::Ping>(), "app.Ping{n}");
    assert_eq!(message_tag::<two::Pong>(), "app.Ping{n}");
    assert_eq!(message_tag::<one::Job>(), "Job{id}");
    assert_eq!(message_tag::<two::Job>(), "Job{id,priority}");
    assert_eq!(message_tag::<one::Hand>(), message_tag::<two::Hand>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_enums_of_two_modules_interoperate() {
    within(T, async {
        let (a, b, b_id) = two_nodes().await;
        b.export(Some("counter"), counter()).unwrap();
        let r = a.lookup::<one::Counter>(b_id, "counter").await.unwrap();
        r.tell(one::Counter::Add(2)).await.unwrap();
        r.tell(one::Counter::Add(3)).await.unwrap();
        assert_eq!(r.ask(one::Counter::Get, T).await.unwrap(), 5);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_serde_rename_matches_a_type_of_another_rust_name() {
    within(T, async {
        let (a, b, b_id) = two_nodes().await;
        let (mailbox, mut received) = inbox::<two::Pong>();
        b.export(Some("pong"), mailbox).unwrap();
        let r = a.lookup::<one::Ping>(b_id, "pong").await.unwrap();
        r.tell(one::Ping { n: 7 }).await.unwrap();
        assert_eq!(received.recv().await, Some(two::Pong { n: 7 }));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_field_set_is_a_type_mismatch_naming_both_tags() {
    within(T, async {
        let (a, b, b_id) = two_nodes().await;
        let (mailbox, _received) = inbox::<two::Job>();
        b.export(Some("jobs"), mailbox).unwrap();
        let err = a.lookup::<one::Job>(b_id, "jobs").await.unwrap_err();
        assert_eq!(err, RemoteError::TypeMismatch { expected: "Job{id}".into(), found: "Job{id,priority}".into() });
        assert_eq!(err.to_string(), "type mismatch: asked for Job{id}, the actor takes Job{id,priority}");
    })
    .await;
}

/// A ref received inside a message is checked by its owner when the
/// receiver opens its route (`Open`), with the receiver's tag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ref_inside_a_message_is_checked_by_tag_when_its_route_opens() {
    within(T, async {
        let (a, b, b_id) = two_nodes().await;
        let (jobs, _received) = inbox::<one::Job>();
        let job_ref = a.export(None, jobs).unwrap();
        let (counter_box, mut counted) = inbox::<one::Counter>();
        let counter_ref = a.export(None, counter_box).unwrap();
        let (hands, mut handed) = inbox::<two::Hand>();
        b.export(Some("hand"), hands).unwrap();
        let hand = a.lookup::<one::Hand>(b_id, "hand").await.unwrap();

        // The same Counter under another path: B's tell reaches A's actor.
        hand.tell(one::Hand::Counter(counter_ref)).await.unwrap();
        let Some(two::Hand::Counter(on_b)) = handed.recv().await else { panic!("expected a counter") };
        on_b.tell(two::Counter::Add(10)).await.unwrap();
        assert!(matches!(counted.recv().await, Some(one::Counter::Add(10))));

        // Another Job: A refuses the route B asks for, naming both tags.
        hand.tell(one::Hand::Job(job_ref)).await.unwrap();
        let Some(two::Hand::Job(on_b)) = handed.recv().await else { panic!("expected a job") };
        match on_b.tell(two::Job { id: 1, priority: 2 }).await.unwrap_err() {
            TellError::Unreachable { error, msg } => {
                assert_eq!(
                    error,
                    RemoteError::TypeMismatch { expected: "Job{id,priority}".into(), found: "Job{id}".into() }
                );
                assert_eq!(msg, two::Job { id: 1, priority: 2 }, "the message is handed back");
            }
            other => panic!("expected a type mismatch, got {other:?}"),
        }
    })
    .await;
}

/// Within one process messages are handed over unencoded, so a ref that
/// comes back to its own node as a twin type cannot deliver; the error
/// names the Rust types, since the tags are the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ref_back_home_as_a_twin_type_names_the_rust_types() {
    within(T, async {
        let (a, b, b_id) = two_nodes().await;
        let (counter_box, _counted) = inbox::<one::Counter>();
        b.export(Some("counter"), counter_box).unwrap();
        let (hands, mut handed) = inbox::<two::Hand>();
        b.export(Some("hand"), hands).unwrap();
        // B's counter takes `one::Counter`; its ref comes home inside a
        // `two::Hand`, which holds a `RemoteRef<two::Counter>`.
        let counter = a.lookup::<one::Counter>(b_id, "counter").await.unwrap();
        let hand = a.lookup::<one::Hand>(b_id, "hand").await.unwrap();
        hand.tell(one::Hand::Counter(counter)).await.unwrap();
        let Some(two::Hand::Counter(home)) = handed.recv().await else { panic!("expected a counter") };
        match home.tell(two::Counter::Add(1)).await.unwrap_err() {
            TellError::Unreachable { error: RemoteError::TypeMismatch { expected, found }, .. } => {
                assert!(expected.ends_with("two::Counter"), "{expected}");
                assert!(found.ends_with("one::Counter"), "{found}");
            }
            other => panic!("expected a type mismatch, got {other:?}"),
        }
    })
    .await;
}

/// One export cannot take two Rust types of one tag: a peer's message with
/// that tag could only decode as one of them. The second is left out (and
/// an error logged), so the first keeps working and a lookup finds one tag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_keeps_the_first_of_two_types_with_one_tag() {
    within(T, async {
        let (a, b, b_id) = two_nodes().await;
        let (pings, mut got) = inbox::<one::Ping>();
        let (pongs, _) = inbox::<two::Pong>();
        let both = b.export_many(Some("ping"), pings).mailbox(pongs).finish().unwrap();
        assert_eq!(both.tags().unwrap(), [message_tag::<one::Ping>()]);

        let r = a.lookup::<two::Pong>(b_id, "ping").await.unwrap();
        r.tell(two::Pong { n: 7 }).await.unwrap();
        assert_eq!(got.recv().await.unwrap(), one::Ping { n: 7 });
    })
    .await;
}
