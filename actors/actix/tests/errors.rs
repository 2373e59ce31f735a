//! Errors in actix's terms where the meaning matches, and never a closed
//! mailbox for what is an encoding failure.

use std::time::Duration;

use actix::prelude::*;
use serde::{Deserialize, Serialize};
use tether::{Config, Node, NodeId, TellError};
use tether_actix::{export, lookup, RemoteMailboxError, TellErrorExt};
use tether_test_support::within;

const T: Duration = Duration::from_secs(30);
const LIMIT: u32 = 64 * 1024;

/// Asks for a result of `n` bytes.
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "Vec<u8>")]
struct Fetch(usize);

/// Carries `n` bytes.
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "()")]
struct Put(Vec<u8>);

struct Store;

impl Actor for Store {
    type Context = Context<Self>;
}

impl Handler<Fetch> for Store {
    type Result = Vec<u8>;
    fn handle(&mut self, Fetch(n): Fetch, _: &mut Context<Self>) -> Vec<u8> {
        vec![7; n]
    }
}

impl Handler<Put> for Store {
    type Result = ();
    fn handle(&mut self, _: Put, _: &mut Context<Self>) {}
}

/// Both nodes accept messages of at most 64 KiB.
async fn two_nodes() -> (Node, Node, NodeId) {
    let mut cfg = Config::default();
    cfg.max_message = LIMIT;
    let a = Node::new(Some("a"), cfg.clone()).unwrap();
    let b = Node::new(Some("b"), cfg).unwrap();
    let b_id = a.connect(&b.listen("127.0.0.1:0").await.unwrap().to_string()).await.unwrap();
    (a, b, b_id)
}

#[actix::test]
async fn a_result_too_large_to_send_back_is_not_a_closed_mailbox() {
    within(T, async {
        let (a, b, b_id) = two_nodes().await;
        let addr = Store.start();
        export::<_, Fetch>(&b, Some("store"), addr).unwrap();
        let store = lookup::<Fetch>(&a, b_id, "store").await.unwrap();

        assert_eq!(store.send(Fetch(10)).await.unwrap().len(), 10);
        let err = store.send(Fetch(2 * LIMIT as usize)).await.unwrap_err();
        assert!(
            matches!(&err, RemoteMailboxError::Message(text) if text.contains("could not be sent back")),
            "{err:?}"
        );
        assert!(!err.is_final(), "the actor is fine");
        assert_eq!(actix::MailboxError::try_from(err.clone()), Err(err), "no actix error means this");
        // The actor still answers.
        assert_eq!(store.send(Fetch(3)).await.unwrap().len(), 3);
    })
    .await;
}

#[actix::test]
async fn a_message_too_large_is_a_send_error_not_closed() {
    within(T, async {
        let (a, b, b_id) = two_nodes().await;
        export::<_, Put>(&b, Some("store"), Store.start()).unwrap();
        let store = lookup::<Put>(&a, b_id, "store").await.unwrap();

        let err = store.try_send(Put(vec![0; 2 * LIMIT as usize])).unwrap_err();
        assert!(matches!(err, TellError::Send(_)), "{err:?}");
        assert!(err.into_send_error().is_err(), "actix's SendError has no word for it");

        let err = store.send(Put(vec![0; 2 * LIMIT as usize])).await.unwrap_err();
        assert!(matches!(err, RemoteMailboxError::Message(_)), "{err:?}");
        assert!(actix::MailboxError::try_from(err).is_err());

        // Where the meaning matches, actix's own errors.
        b.shutdown().await;
        let err = store.send(Put(vec![1])).await.unwrap_err();
        assert_eq!(actix::MailboxError::try_from(err), Ok(actix::MailboxError::Closed));
        let err = store.try_send(Put(vec![1])).unwrap_err();
        assert!(matches!(err.into_send_error(), Ok(SendError::Closed(Put(_)))));
    })
    .await;
}

/// A store that can be told to wait for a gate.
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "()")]
enum Load {
    Data(Vec<u8>),
    Block,
}

struct Gated(std::sync::Arc<tokio::sync::Notify>);

impl Actor for Gated {
    type Context = Context<Self>;
}

impl Handler<Load> for Gated {
    type Result = ();
    fn handle(&mut self, load: Load, ctx: &mut Context<Self>) {
        if let Load::Block = load {
            let gate = self.0.clone();
            ctx.wait(async move { gate.notified().await }.into_actor(self));
        }
    }
}

/// A request queued in the outbox (behind messages waiting for room) that
/// turns out too large is reported as that, not as a closed mailbox.
#[actix::test]
async fn a_queued_request_too_large_is_not_a_closed_mailbox() {
    within(T, async {
        let (a, b, b_id) = two_nodes().await;
        let gate = std::sync::Arc::new(tokio::sync::Notify::new());
        export::<_, Load>(&b, Some("store"), Gated(gate.clone()).start()).unwrap();
        let store = lookup::<Load>(&a, b_id, "store").await.unwrap();
        store.send(Load::Block).await.unwrap();
        for _ in 0..10_000 {
            store.do_send(Load::Data(vec![1; 64]));
        }
        assert!(a.stats().outbox_held > 0, "the window is full, the outbox busy");
        let big = store.send(Load::Data(vec![0; 2 * LIMIT as usize]));
        gate.notify_one();
        let err = big.await.unwrap_err();
        assert!(matches!(&err, RemoteMailboxError::Message(text) if text.contains("TooLarge")), "{err:?}");
        assert!(actix::MailboxError::try_from(err).is_err());
    })
    .await;
}
