//! One export, one lookup and one handle for an actix actor that handles
//! several message types; each send typed by its message; a `Recipient`
//! for one type where actix code wants one.

use std::time::Duration;

use actix::prelude::*;
use serde::{Deserialize, Serialize};
use tether::{Config, Node, NodeId, RemoteError, TellError};
use tether_actix::{lookup, lookup_actor, ActorExport, RemoteActor, RemoteMailboxError};
use tether_test_support::within;

const T: Duration = Duration::from_secs(30);

#[derive(Message, Serialize, Deserialize, Debug)]
#[rtype(result = "usize")]
struct Join(String);

#[derive(Message, Serialize, Deserialize, Debug)]
#[rtype(result = "()")]
struct Say(String);

#[derive(Message, Serialize, Deserialize, Debug)]
#[rtype(result = "Vec<String>")]
struct History;

/// Handled by the room, but not exported.
#[derive(Message, Serialize, Deserialize, Debug)]
#[rtype(result = "()")]
struct Kick(String);

#[derive(Default)]
struct Room {
    members: Vec<String>,
    said: Vec<String>,
}

impl Actor for Room {
    type Context = Context<Self>;
}

impl Handler<Join> for Room {
    type Result = usize;
    fn handle(&mut self, Join(who): Join, _: &mut Context<Self>) -> usize {
        self.members.push(who);
        self.members.len()
    }
}

impl Handler<Say> for Room {
    type Result = ();
    fn handle(&mut self, Say(text): Say, _: &mut Context<Self>) {
        self.said.push(text);
    }
}

impl Handler<History> for Room {
    type Result = Vec<String>;
    fn handle(&mut self, _: History, _: &mut Context<Self>) -> Vec<String> {
        self.said.clone()
    }
}

impl Handler<Kick> for Room {
    type Result = ();
    fn handle(&mut self, Kick(who): Kick, _: &mut Context<Self>) {
        self.members.retain(|m| *m != who);
    }
}

async fn two_nodes() -> (Node, Node, NodeId) {
    let a = Node::new(Some("a"), Config::default()).unwrap();
    let b = Node::new(Some("b"), Config::default()).unwrap();
    let b_id = a.connect(&b.listen("127.0.0.1:0").await.unwrap().to_string()).await.unwrap();
    (a, b, b_id)
}

fn export_room(b: &Node) -> RemoteActor {
    ActorExport::new(b, Some("room"), Room::default().start())
        .handles::<Join>()
        .handles::<Say>()
        .handles::<History>()
        .finish()
        .unwrap()
}

#[actix::test]
async fn one_export_and_one_lookup_reach_every_handled_type() {
    within(T, async {
        let (a, b, b_id) = two_nodes().await;
        let exported = export_room(&b);
        assert_eq!(b.stats().exports, 1, "one export for three types");

        let room = lookup_actor(&a, b_id, "room").await.unwrap();
        assert_eq!(room, exported, "one actor, one identity");
        assert_eq!(room.tags().map(|t| t.len()), Some(3));

        // Each send is typed by its message.
        let members: usize = room.send(Join("ann".into())).await.unwrap();
        assert_eq!(members, 1);
        room.do_send(Say("hello".into()));
        room.try_send(Say("again".into())).unwrap();
        room.tell(Say("and again".into())).await.unwrap();
        let history: Vec<String> = room.send(History).await.unwrap();
        assert_eq!(history, ["hello", "again", "and again"], "one type's messages keep their order");
        assert_eq!(room.send(Join("bob".into())).await.unwrap(), 2);
        // As in actix, `send` queues when called, not when awaited: a
        // `do_send` after it is handled after it.
        let before = room.send(Join("cid".into()));
        room.do_send(Join("dee".into()));
        assert_eq!(before.await.unwrap(), 3);

        // A type the actor handles but was not exported for, told at once.
        match room.send(Kick("ann".into())).await {
            Err(RemoteMailboxError::Unreachable(RemoteError::TypeMismatch { expected, found })) => {
                assert_eq!(expected, "Envelope<Kick>");
                assert!(found.contains("Join") && found.contains("History"), "{found}");
            }
            other => panic!("expected a type mismatch, got {other:?}"),
        }
        assert!(matches!(
            room.try_send(Kick("ann".into())),
            Err(TellError::Unreachable { error: RemoteError::TypeMismatch { .. }, .. })
        ));

        // The one-type lookup finds the same actor by any of its types.
        let says = lookup::<Say>(&a, b_id, "room").await.unwrap();
        assert_eq!(says.id(), room.id());
        says.do_send(Say("typed".into()));
        assert_eq!(room.send(History).await.unwrap().last().map(String::as_str), Some("typed"));
        assert_eq!(room.send(Join("eve".into())).await.unwrap(), 5);
    })
    .await;
}

/// Asks a room it was sent, wherever it lives, for its history.
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "Vec<String>")]
struct Relay(RemoteActor);

struct Relayer;

impl Actor for Relayer {
    type Context = Context<Self>;
}

impl Handler<Relay> for Relayer {
    type Result = ResponseFuture<Vec<String>>;
    fn handle(&mut self, Relay(room): Relay, _: &mut Context<Self>) -> Self::Result {
        room.do_send(Say("from the relay".into()));
        Box::pin(async move { room.send(History).await.unwrap_or_default() })
    }
}

#[actix::test]
async fn the_handle_travels_inside_a_message() {
    within(T, async {
        let (a, b, b_id) = two_nodes().await;
        let room = export_room(&a);
        tether_actix::export::<_, Relay>(&b, Some("relay"), Relayer.start()).unwrap();
        let relay = lookup::<Relay>(&a, b_id, "relay").await.unwrap();
        let history = relay.send(Relay(room.clone())).await.unwrap();
        assert_eq!(history, ["from the relay"]);
    })
    .await;
}

/// Asks a room it was sent for its history, and for nothing else: a room
/// exported for that one type will do.
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "Result<Vec<String>, String>")]
struct AskHistory(RemoteActor);

impl Handler<AskHistory> for Relayer {
    type Result = ResponseFuture<Result<Vec<String>, String>>;
    fn handle(&mut self, AskHistory(room): AskHistory, _: &mut Context<Self>) -> Self::Result {
        Box::pin(async move { room.send(History).await.map_err(|e| e.to_string()) })
    }
}

/// A handle decoded from a message does not know which types its actor
/// takes; one exported with plain `export` is reached all the same.
#[actix::test]
async fn a_handle_to_an_actor_exported_for_one_type_travels_too() {
    within(T, async {
        let (a, b, b_id) = two_nodes().await;
        let room = Room { said: vec!["hello".into()], ..Room::default() }.start();
        tether_actix::export::<_, History>(&b, Some("plain"), room).unwrap();
        let found = lookup_actor(&a, b_id, "plain").await.unwrap();
        tether_actix::export::<_, AskHistory>(&b, Some("asker"), Relayer.start()).unwrap();
        let asker = lookup::<AskHistory>(&a, b_id, "asker").await.unwrap();
        assert_eq!(asker.send(AskHistory(found)).await.unwrap(), Ok(vec!["hello".to_string()]));
    })
    .await;
}

/// actix code that only knows `Recipient`s.
async fn greet(recipient: Recipient<Join>, log: Recipient<Say>) -> usize {
    log.do_send(Say("greeting".into()));
    recipient.send(Join("carol".into())).await.unwrap()
}

#[actix::test]
async fn a_recipient_for_one_type_works_where_actix_code_wants_one() {
    within(T, async {
        let (a, b, b_id) = two_nodes().await;
        export_room(&b);
        let room = lookup_actor(&a, b_id, "room").await.unwrap();
        let joins = room.addr::<Join>().unwrap().recipient();
        let says = room.addr::<Say>().unwrap().recipient();
        assert_eq!(greet(joins.clone(), says).await, 1);
        assert_eq!(joins.send(Join("dan".into())).await.unwrap(), 2);
        assert_eq!(room.send(History).await.unwrap(), ["greeting"]);

        // A remote failure reads as actix's closed mailbox.
        b.shutdown().await;
        assert_eq!(joins.send(Join("eve".into())).await, Err(MailboxError::Closed));
    })
    .await;
}

/// One of three steps, each its own message type.
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "()")]
struct StepA(u64);
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "()")]
struct StepB(u64);
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "u64")]
struct StepC(u64);

/// Records the order steps arrive in, whatever their types.
#[derive(Default)]
struct Steps {
    next: u64,
    out_of_order: u64,
}

impl Steps {
    fn saw(&mut self, n: u64) {
        if n != self.next {
            self.out_of_order += 1;
        }
        self.next = n + 1;
    }
}

impl Actor for Steps {
    type Context = Context<Self>;
}

impl Handler<StepA> for Steps {
    type Result = ();
    fn handle(&mut self, StepA(n): StepA, _: &mut Context<Self>) {
        self.saw(n)
    }
}

impl Handler<StepB> for Steps {
    type Result = ();
    fn handle(&mut self, StepB(n): StepB, _: &mut Context<Self>) {
        self.saw(n)
    }
}

impl Handler<StepC> for Steps {
    type Result = u64;
    fn handle(&mut self, StepC(n): StepC, _: &mut Context<Self>) -> u64 {
        self.saw(n);
        self.out_of_order
    }
}

/// Messages of three types sent through one handle, interleaved, arrive in
/// the order sent, as through a local `Addr`; on this node too.
#[actix::test]
async fn messages_of_every_type_keep_their_order() {
    within(T, async {
        let (a, b, b_id) = two_nodes().await;
        let export = |node: &Node| {
            ActorExport::new(node, None, Steps::default().start())
                .handles::<StepA>()
                .handles::<StepB>()
                .handles::<StepC>()
                .finish()
                .unwrap()
        };
        let here = export(&a);
        ActorExport::new(&b, Some("steps"), Steps::default().start())
            .handles::<StepA>()
            .handles::<StepB>()
            .handles::<StepC>()
            .finish()
            .unwrap();
        let there = lookup_actor(&a, b_id, "steps").await.unwrap();
        for steps in [there, here] {
            const N: u64 = 30_000;
            for n in 0..N {
                match n % 3 {
                    0 => steps.do_send(StepA(n)),
                    1 => match steps.try_send(StepB(n)) {
                        Ok(()) => {}
                        Err(TellError::Full(back)) => steps.do_send(back),
                        Err(e) => panic!("try_send {n}: {e:?}"),
                    },
                    // (A dropped `send` future would cancel its request.)
                    _ => steps.tell(StepC(n)).await.unwrap(),
                }
            }
            assert_eq!(steps.send(StepC(N)).await.unwrap(), 0, "every message arrived in the order sent");
        }
    })
    .await;
}
