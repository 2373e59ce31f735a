//! Actors and node pairs shared by the integration tests.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use serde::{Deserialize, Serialize};
use tether::{Config, Node, NodeId, ReplyPort, WatchEvent};
use tether_ractor::RemoteActorRef;
use tokio::sync::{mpsc, Notify};

pub use tether_test_support::within;

/// Every test's overall bound.
pub const T: Duration = Duration::from_secs(30);
/// The bound of one call.
pub const CALL: Duration = Duration::from_secs(5);

/// Two nodes, A connected to B over TCP on 127.0.0.1.
pub async fn two_nodes() -> (Node, Node, NodeId) {
    two_nodes_with(Config::default()).await
}

/// Two nodes configured with `cfg`, A connected to B over TCP on 127.0.0.1.
pub async fn two_nodes_with(cfg: Config) -> (Node, Node, NodeId) {
    let a = Node::new(Some("a"), cfg.clone()).unwrap();
    let b = Node::new(Some("b"), cfg).unwrap();
    let addr = b.listen("127.0.0.1:0").await.unwrap();
    let b_id = a.connect(&addr.to_string()).await.unwrap();
    assert_eq!(b_id, b.id());
    (a, b, b_id)
}

#[derive(Serialize, Deserialize, Debug)]
pub enum CounterMsg {
    Add(u64),
    /// Like `Add`, with a payload to fill windows.
    Bulk(u64, Vec<u8>),
    Get(ReplyPort<u64>),
    Echo(String, ReplyPort<String>),
    /// Keeps the reply port unanswered (the caller times out).
    Hold(ReplyPort<u64>),
    /// Drops the reply port unanswered (the caller fails at once).
    Ignore(ReplyPort<u64>),
    /// Blocks the actor until the test's gate opens.
    Pause,
    /// Calls another counter, wherever it is, and answers with its total.
    AskOther(RemoteActorRef<CounterMsg>, ReplyPort<u64>),
    /// The handler stops its own actor with this reason.
    StopWith(String),
    /// The handler returns this error.
    Fail(String),
    /// The handler panics with this message.
    Panic(String),
}

pub struct Counter;

pub struct CounterState {
    total: u64,
    held: Vec<ReplyPort<u64>>,
    gate: Arc<Notify>,
}

impl Actor for Counter {
    type Msg = CounterMsg;
    type State = CounterState;
    type Arguments = Arc<Notify>;

    async fn pre_start(&self, _: ActorRef<CounterMsg>, gate: Arc<Notify>) -> Result<CounterState, ActorProcessingErr> {
        Ok(CounterState { total: 0, held: Vec::new(), gate })
    }

    async fn handle(
        &self,
        myself: ActorRef<CounterMsg>,
        msg: CounterMsg,
        st: &mut CounterState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            CounterMsg::Add(n) | CounterMsg::Bulk(n, _) => st.total += n,
            CounterMsg::Get(reply) => {
                let _ = reply.send(st.total);
            }
            CounterMsg::Echo(text, reply) => {
                let _ = reply.send(text);
            }
            CounterMsg::Hold(reply) => st.held.push(reply),
            CounterMsg::Ignore(reply) => drop(reply),
            CounterMsg::Pause => st.gate.notified().await,
            CounterMsg::AskOther(other, reply) => {
                let total = other.ask(CounterMsg::Get, CALL).await?;
                let _ = reply.send(total);
            }
            CounterMsg::StopWith(reason) => myself.stop(Some(reason)),
            CounterMsg::Fail(error) => return Err(error.into()),
            CounterMsg::Panic(message) => panic!("{message}"),
        }
        Ok(())
    }
}

/// Spawns a counter; the returned gate ends a `Pause`.
pub async fn counter() -> (ActorRef<CounterMsg>, Arc<Notify>) {
    let gate = Arc::new(Notify::new());
    let (actor, _) = Actor::spawn(None, Counter, gate.clone()).await.unwrap();
    (actor, gate)
}

/// What the watcher actor receives.
#[derive(Debug)]
pub enum WatcherMsg {
    Gone(WatchEvent),
}

/// A local actor that forwards what it receives to the test.
pub struct Watcher;

impl Actor for Watcher {
    type Msg = WatcherMsg;
    type State = mpsc::UnboundedSender<WatchEvent>;
    type Arguments = mpsc::UnboundedSender<WatchEvent>;

    async fn pre_start(
        &self,
        _: ActorRef<WatcherMsg>,
        out: mpsc::UnboundedSender<WatchEvent>,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(out)
    }

    async fn handle(
        &self,
        _: ActorRef<WatcherMsg>,
        msg: WatcherMsg,
        out: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let WatcherMsg::Gone(event) = msg;
        let _ = out.send(event);
        Ok(())
    }
}

/// Spawns a watcher; the receiver yields what it was told.
pub async fn watcher() -> (ActorRef<WatcherMsg>, mpsc::UnboundedReceiver<WatchEvent>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let (actor, _) = Actor::spawn(None, Watcher, tx).await.unwrap();
    (actor, rx)
}

/// A local actor that passes every message it gets to the test: a watcher
/// whose messages are the watch's values themselves.
pub struct Forward<T>(std::marker::PhantomData<fn(T)>);

impl<T: Send + 'static> Actor for Forward<T> {
    type Msg = T;
    type State = mpsc::UnboundedSender<T>;
    type Arguments = mpsc::UnboundedSender<T>;

    async fn pre_start(
        &self,
        _: ActorRef<T>,
        out: mpsc::UnboundedSender<T>,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(out)
    }

    async fn handle(&self, _: ActorRef<T>, msg: T, out: &mut Self::State) -> Result<(), ActorProcessingErr> {
        let _ = out.send(msg);
        Ok(())
    }
}

/// Spawns a [`Forward`]; the receiver yields what it got.
pub async fn forward<T: Send + 'static>() -> (ActorRef<T>, mpsc::UnboundedReceiver<T>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let (actor, _) = Actor::spawn(None, Forward(std::marker::PhantomData), tx).await.unwrap();
    (actor, rx)
}
