//! ractor code against a remote actor: ractor's macros and `send_message`
//! on a `RemoteActorRef`, `RpcReplyPort` in messages that cross nodes, the
//! `ActorRef` proxy, and send failures in ractor's error terms. Two nodes
//! over TCP on 127.0.0.1, real ractor actors.

mod common;

use std::time::Duration;

use common::{two_nodes, two_nodes_with, within, T};
use ractor::rpc::CallResult;
use ractor::{
    call, call_t, cast, Actor, ActorProcessingErr, ActorRef, MessagingErr, RactorErr, RpcReplyPort, SupervisionEvent,
};
use serde::{Deserialize, Serialize, Serializer};
use tether::codec::CodecKind;
use tether::{Config, Node, NodeId, ReplyPort, TellError};
use tether_ractor::rpc_reply::{to_reply_port, OUTSIDE_CALL};
use tether_ractor::{export, lookup, RemoteActorRef};
use tokio::sync::mpsc;

/// The message enum of a local ractor program, with the derives and the
/// port attribute a remote one needs.
#[derive(Serialize, Deserialize)]
enum Msg {
    Add(u64),
    Get(#[serde(with = "tether_ractor::rpc_reply")] RpcReplyPort<u64>),
    Echo(String, #[serde(with = "tether_ractor::rpc_reply")] RpcReplyPort<String>),
    /// Answers with the port's timeout, in milliseconds.
    TimeoutOf(#[serde(with = "tether_ractor::rpc_reply")] RpcReplyPort<Option<u64>>),
    /// Keeps the port unanswered.
    Hold(#[serde(with = "tether_ractor::rpc_reply")] RpcReplyPort<u64>),
    /// Whether the port kept by `Hold` reports its caller gone.
    HeldClosed(#[serde(with = "tether_ractor::rpc_reply")] RpcReplyPort<bool>),
    /// Drops the port unanswered.
    Ignore(#[serde(with = "tether_ractor::rpc_reply")] RpcReplyPort<u64>),
    /// The total, on tether's serializable port.
    Ask(ReplyPort<u64>),
    /// Never encodes.
    Poison(Poison),
    /// Never encodes, with a port: a call that cannot be sent.
    PoisonCall(Poison, #[serde(with = "tether_ractor::rpc_reply")] RpcReplyPort<u64>),
    Big(Vec<u8>),
}

/// A value whose `Serialize` fails.
struct Poison;

impl Serialize for Poison {
    fn serialize<S: Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("poison does not encode"))
    }
}

impl<'de> Deserialize<'de> for Poison {
    fn deserialize<D: serde::Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        Err(serde::de::Error::custom("poison does not decode"))
    }
}

struct Counter;

#[derive(Default)]
struct State {
    total: u64,
    held: Vec<RpcReplyPort<u64>>,
}

impl Actor for Counter {
    type Msg = Msg;
    type State = State;
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<Msg>, _: ()) -> Result<State, ActorProcessingErr> {
        Ok(State::default())
    }

    async fn handle(&self, _: ActorRef<Msg>, msg: Msg, st: &mut State) -> Result<(), ActorProcessingErr> {
        match msg {
            Msg::Add(n) => st.total += n,
            Msg::Get(port) => {
                let _ = port.send(st.total);
            }
            Msg::Echo(text, port) => {
                let _ = port.send(text);
            }
            Msg::TimeoutOf(port) => {
                let ms = port.get_timeout().map(|t| t.as_millis() as u64);
                let _ = port.send(ms);
            }
            Msg::Hold(port) => st.held.push(port),
            Msg::HeldClosed(port) => {
                let _ = port.send(st.held.iter().all(|p| p.is_closed()));
            }
            Msg::Ignore(port) => drop(port),
            Msg::Ask(port) => {
                let _ = port.send(st.total);
            }
            Msg::Poison(_) | Msg::PoisonCall(..) => unreachable!("never encodes"),
            Msg::Big(_) => {}
        }
        Ok(())
    }
}

/// A counter on B, exported as "counter", and A's ref to it (the route
/// open: a call went through).
async fn remote_counter(a: &Node, b: &Node, b_id: NodeId) -> (RemoteActorRef<Msg>, ActorRef<Msg>) {
    let (actor, _) = Actor::spawn(None, Counter, ()).await.unwrap();
    export(b, Some("counter"), actor.clone()).unwrap();
    let remote = lookup::<Msg>(a, b_id, "counter").await.unwrap();
    assert_eq!(call!(remote, Msg::Get).unwrap(), 0);
    (remote, actor)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ractor_macros_work_on_a_remote_actor_ref() {
    within(T, async {
        let (a, b, b_id) = two_nodes().await;
        let (remote, _actor) = remote_counter(&a, &b, b_id).await;

        cast!(remote, Msg::Add(2)).unwrap();
        remote.send_message(Msg::Add(3)).unwrap();
        remote.cast(Msg::Add(5)).unwrap();
        assert_eq!(call!(remote, Msg::Get).unwrap(), 10, "casts arrive before the call, in order");
        assert_eq!(call!(remote, Msg::Echo, "hi".to_string()).unwrap(), "hi");
        assert_eq!(call_t!(remote, Msg::Get, 5_000).unwrap(), 10);
        assert_eq!(call_t!(remote, Msg::Echo, 5_000, "there".to_string()).unwrap(), "there");
        // The handler's port carries the caller's timeout, as locally.
        assert_eq!(call_t!(remote, Msg::TimeoutOf, 4_321).unwrap(), Some(4_321));
        assert_eq!(call!(remote, Msg::TimeoutOf).unwrap(), None);
        // And the method itself, as `ActorRef::call`.
        let got = remote.call(Msg::Get, Some(Duration::from_secs(5))).await.unwrap();
        assert_eq!(got, CallResult::Success(10));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_t_times_out_and_the_handler_sees_the_port_closed() {
    within(T, async {
        let (a, b, b_id) = two_nodes().await;
        let (remote, _actor) = remote_counter(&a, &b, b_id).await;

        match call_t!(remote, Msg::Hold, 200) {
            Err(RactorErr::Timeout) => {}
            other => panic!("expected a timeout, got {:?}", other.map(|_| ())),
        }
        // The caller gave up: the handler's port turns closed (its forwarding
        // task saw the caller's end go and dropped the receiver).
        loop {
            if call!(remote, Msg::HeldClosed).unwrap() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // The actor still answers.
        assert_eq!(call_t!(remote, Msg::Get, 5_000).unwrap(), 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_rpc_port_fails_the_call_at_once() {
    within(T, async {
        let (a, b, b_id) = two_nodes().await;
        let (remote, _actor) = remote_counter(&a, &b, b_id).await;

        // No timeout: only the dropped port can end this call, and must.
        let result = within(Duration::from_secs(5), remote.call(Msg::Ignore, None)).await;
        assert_eq!(result.unwrap(), CallResult::SenderError);
        // `call!` says it as ractor does for a local actor.
        match within(Duration::from_secs(5), async { call!(remote, Msg::Ignore) }).await {
            Err(RactorErr::Messaging(MessagingErr::ChannelClosed)) => {}
            other => panic!("expected ChannelClosed, got {:?}", other.map(|_| ())),
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_to_an_actor_on_the_same_node_keeps_its_port() {
    within(T, async {
        let (a, _b, _) = two_nodes().await;
        let (actor, _) = Actor::spawn(None, Counter, ()).await.unwrap();
        // A ref to an actor of this node: messages are handed over as they are.
        let local = RemoteActorRef::from(export(&a, None, actor).unwrap());
        cast!(local, Msg::Add(4)).unwrap();
        assert_eq!(call!(local, Msg::Get).unwrap(), 4);
        assert_eq!(local.call(Msg::Ignore, None).await.unwrap(), CallResult::SenderError);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rpc_port_outside_a_call_fails_loudly() {
    within(T, async {
        // MessagePack keeps a serde error's text (postcard drops it; the
        // serializer logs the rule for that case).
        let mut cfg = Config::default();
        cfg.codec = CodecKind::MessagePack;
        let (a, b, b_id) = two_nodes_with(cfg).await;
        let (remote, _actor) = remote_counter(&a, &b, b_id).await;

        let (tx, rx) = ractor::concurrency::oneshot::<u64>();
        match remote.post(Msg::Get(tx.into())) {
            Err(TellError::Send(e)) => {
                assert!(e.to_string().contains(OUTSIDE_CALL), "the serde error names the rule: {e}");
            }
            other => panic!("expected an encoding error, got {other:?}"),
        }
        assert!(rx.await.is_err(), "the port was dropped with the message");
        let (tx, _rx) = ractor::concurrency::oneshot::<u64>();
        assert!(matches!(remote.cast(Msg::Get(tx.into())), Err(MessagingErr::InvalidActorType)));
        assert_eq!(call!(remote, Msg::Get).unwrap(), 0, "in a call it travels");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encoding_failures_are_not_reported_as_a_closed_actor() {
    within(T, async {
        let max = 1 << 20;
        let (a, b, b_id) = two_nodes_with({
            let mut cfg = Config::default();
            cfg.max_message = max;
            cfg
        })
        .await;
        let (remote, actor) = remote_counter(&a, &b, b_id).await;

        // A message whose Serialize fails.
        match cast!(remote, Msg::Poison(Poison)) {
            Err(RactorErr::Messaging(MessagingErr::InvalidActorType)) => {}
            other => panic!("expected InvalidActorType, got {other:?}"),
        }
        match remote.post(Msg::Poison(Poison)) {
            Err(TellError::Send(e)) => assert!(e.to_string().contains("does not encode"), "{e}"),
            other => panic!("expected an encoding error, got {other:?}"),
        }
        match call!(remote, Msg::PoisonCall, Poison) {
            Err(RactorErr::Messaging(MessagingErr::InvalidActorType)) => {}
            other => panic!("expected InvalidActorType, got {:?}", other.map(|_| ())),
        }
        // A message larger than the peer's max_message.
        let big = vec![0u8; 2 * max as usize];
        match remote.send_message(Msg::Big(big.clone())) {
            Err(MessagingErr::InvalidActorType) => {}
            other => panic!("expected InvalidActorType, got {other:?}"),
        }
        match remote.post(Msg::Big(big)) {
            Err(TellError::Send(e)) => assert!(e.to_string().contains("max_message"), "{e}"),
            other => panic!("expected TooLarge, got {other:?}"),
        }
        // The actor is fine and the route still open.
        cast!(remote, Msg::Add(1)).unwrap();
        assert_eq!(call!(remote, Msg::Get).unwrap(), 1);

        // A stopped actor is what `SendErr` says, with the message back.
        actor.stop(None);
        remote.monitor().await;
        match cast!(remote, Msg::Add(7)) {
            Err(e @ RactorErr::Messaging(MessagingErr::SendErr(_))) => {
                assert!(matches!(e.try_get_message(), Some(Msg::Add(7))));
            }
            other => panic!("expected SendErr, got {other:?}"),
        }
        match call!(remote, Msg::Get) {
            Err(e @ RactorErr::Messaging(MessagingErr::SendErr(_))) => assert!(e.has_message()),
            other => panic!("expected SendErr, got {:?}", other.map(|_| ())),
        }
    })
    .await;
}

/// Ractor code that knows nothing of tether: it takes an `ActorRef`.
async fn add_three(counter: ActorRef<Msg>) -> Result<u64, RactorErr<Msg>> {
    cast!(counter, Msg::Add(1))?;
    counter.send_message(Msg::Add(2))?;
    call!(counter, |port| Msg::Ask(to_reply_port(port)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_actor_ref_serves_code_that_takes_an_actor_ref() {
    within(T, async {
        let (a, b, b_id) = two_nodes().await;
        let (remote, _actor) = remote_counter(&a, &b, b_id).await;
        let proxy = remote.to_actor_ref().await.unwrap();

        assert_eq!(add_three(proxy.clone()).await.unwrap(), 3);
        assert_eq!(add_three(proxy.clone()).await.unwrap(), 6);
        assert_eq!(call!(remote, Msg::Get).unwrap(), 6, "the proxy's messages reached the remote actor");

        // An RpcReplyPort cannot go through the proxy: the call ends at once.
        match within(Duration::from_secs(5), async { call!(proxy, Msg::Get) }).await {
            Err(RactorErr::Messaging(MessagingErr::ChannelClosed)) => {}
            other => panic!("expected ChannelClosed, got {:?}", other.map(|_| ())),
        }
        // The proxy still runs and forwards.
        assert_eq!(add_three(proxy).await.unwrap(), 9);
    })
    .await;
}

/// A supervisor that reports what it is told.
struct Supervisor;

impl Actor for Supervisor {
    type Msg = ();
    type State = mpsc::UnboundedSender<Option<String>>;
    type Arguments = mpsc::UnboundedSender<Option<String>>;

    async fn pre_start(
        &self,
        _: ActorRef<()>,
        out: mpsc::UnboundedSender<Option<String>>,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(out)
    }

    async fn handle_supervisor_evt(
        &self,
        _: ActorRef<()>,
        event: SupervisionEvent,
        out: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let SupervisionEvent::ActorTerminated(_, _, reason) = event {
            let _ = out.send(reason);
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_stops_when_the_remote_actor_stops() {
    within(T, async {
        let (a, b, b_id) = two_nodes().await;
        let (remote, actor) = remote_counter(&a, &b, b_id).await;
        let (tx, mut reasons) = mpsc::unbounded_channel();
        let (supervisor, _) = Actor::spawn(None, Supervisor, tx).await.unwrap();
        let proxy = remote.to_actor_ref_linked(supervisor.get_cell()).await.unwrap();
        assert_eq!(add_three(proxy.clone()).await.unwrap(), 3);

        actor.stop(None);
        proxy.get_cell().wait(None).await.unwrap();
        let reason = reasons.recv().await.unwrap().unwrap_or_default();
        assert!(reason.contains("Stopped"), "the supervisor learns why: {reason}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_of_an_actor_gone_already_stops() {
    within(T, async {
        let (a, b, b_id) = two_nodes().await;
        let (remote, actor) = remote_counter(&a, &b, b_id).await;
        actor.stop(None);
        remote.monitor().await;
        let proxy = remote.to_actor_ref().await.unwrap();
        proxy.get_cell().wait(None).await.unwrap();
    })
    .await;
}
