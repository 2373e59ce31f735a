//! `cast` keeps ractor's meaning across nodes: it never waits and loses
//! nothing the node's outbox can hold, even when the actor is slow; and a
//! handle just received in a message works at once.

mod common;

use std::time::Duration;

use common::{two_nodes, within};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use serde::{Deserialize, Serialize};
use tether::{Config, ReplyPort};
use tether_ractor::rpc_reply::to_reply_port;
use tether_ractor::{export, export_paced, lookup, Paced, RemoteActorRef};
use tokio::sync::watch;

const T: Duration = Duration::from_secs(120);

#[derive(Serialize, Deserialize, Debug)]
enum TallyMsg {
    Item(u64),
    /// Items seen, and how many came out of order.
    Get(ReplyPort<(u64, u64)>),
}

/// Counts items, checks their order, and works a little on each, so that
/// it is slower than its sender.
struct Tally;

struct TallyState {
    seen: u64,
    next: u64,
    out_of_order: u64,
    work: u32,
    counted: watch::Sender<u64>,
}

impl Actor for Tally {
    type Msg = TallyMsg;
    type State = TallyState;
    type Arguments = (u32, watch::Sender<u64>);

    async fn pre_start(
        &self,
        _: ActorRef<TallyMsg>,
        (work, counted): (u32, watch::Sender<u64>),
    ) -> Result<TallyState, ActorProcessingErr> {
        Ok(TallyState { seen: 0, next: 0, out_of_order: 0, work, counted })
    }

    async fn handle(
        &self,
        _: ActorRef<TallyMsg>,
        msg: TallyMsg,
        st: &mut TallyState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            TallyMsg::Item(n) => {
                if n != st.next {
                    st.out_of_order += 1;
                }
                st.next = n + 1;
                st.seen += 1;
                st.counted.send_replace(st.seen);
                let mut x = n;
                for _ in 0..st.work {
                    x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
                }
            }
            TallyMsg::Get(reply) => {
                let _ = reply.send((st.seen, st.out_of_order));
            }
        }
        Ok(())
    }
}

/// Two nodes, and a ref from the first to a slow, paced tally on the second.
async fn slow_tally() -> (tether::Node, tether::Node, RemoteActorRef<TallyMsg>) {
    let (a, b, b_id) = two_nodes().await;
    let (counted, _) = watch::channel(0);
    let (actor, _) = Paced::spawn(None, Tally, (200, counted)).await.unwrap();
    export_paced(&b, Some("tally"), actor).unwrap();
    let remote = lookup::<TallyMsg>(&a, b_id, "tally").await.unwrap();
    (a, b, remote)
}

/// A million casts to a slow, paced remote actor with the default `Config`,
/// from a loop that never yields: every one is accepted and arrives, in
/// order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_casts_to_a_slow_actor_all_arrive_in_order() {
    within(T, async {
        let (a, _b, remote) = slow_tally().await;

        const N: u64 = 1_000_000;
        for i in 0..N {
            remote.cast(TallyMsg::Item(i)).unwrap();
        }
        let held = a.stats().outbox_held;
        assert!(held > N as usize / 2, "the window took {} of {N} at once: the actor was not slow", N as usize - held);
        assert!(held <= Config::default().max_outbox as usize);

        let (seen, out_of_order) = remote.ask(TallyMsg::Get, T).await.unwrap();
        assert_eq!((seen, out_of_order), (N, 0), "all {N} arrived, in order");
        let stats = a.stats();
        assert_eq!((stats.outbox_held, stats.outbox_refused, stats.outbox_undelivered), (0, 0, 0));
    })
    .await;
}

/// The proxy `ActorRef` of `to_actor_ref` keeps the promise too: casts to
/// it that outrun the remote actor wait in the node's outbox, and all
/// arrive, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn casts_through_the_proxy_actor_ref_all_arrive_in_order() {
    within(T, async {
        let (a, _b, remote) = slow_tally().await;
        let proxy = remote.to_actor_ref().await.unwrap();

        const N: u64 = 100_000;
        for i in 0..N {
            ractor::cast!(proxy, TallyMsg::Item(i)).unwrap();
        }
        // Behind every item, through the proxy and on the route.
        let (seen, out_of_order) =
            ractor::call_t!(proxy, |port| TallyMsg::Get(to_reply_port(port)), T.as_millis() as u64).unwrap();
        assert_eq!((seen, out_of_order), (N, 0), "all {N} arrived, in order");
        let stats = a.stats();
        assert_eq!((stats.outbox_refused, stats.outbox_undelivered), (0, 0));
        proxy.stop(None);
    })
    .await;
}

// The relay is reached remotely, so its message travels: a handle inside.
#[derive(Serialize, Deserialize)]
struct Forward(RemoteActorRef<TallyMsg>, u64);

struct Relay;

struct RelayState {
    failures: u64,
    handled: watch::Sender<(u64, u64)>,
}

impl Actor for Relay {
    type Msg = Forward;
    type State = RelayState;
    type Arguments = watch::Sender<(u64, u64)>;

    async fn pre_start(
        &self,
        _: ActorRef<Forward>,
        handled: watch::Sender<(u64, u64)>,
    ) -> Result<RelayState, ActorProcessingErr> {
        Ok(RelayState { failures: 0, handled })
    }

    /// Sends at once on the handle just decoded: `try_cast`, then `cast`.
    async fn handle(
        &self,
        _: ActorRef<Forward>,
        Forward(tally, n): Forward,
        st: &mut RelayState,
    ) -> Result<(), ActorProcessingErr> {
        if let Err(e) = tally.try_cast(TallyMsg::Item(2 * n)) {
            eprintln!("try_cast on a fresh handle: {e}");
            st.failures += 1;
        }
        if let Err(e) = tally.cast(TallyMsg::Item(2 * n + 1)) {
            eprintln!("cast on a fresh handle: {e}");
            st.failures += 1;
        }
        st.handled.send_modify(|(handled, failures)| {
            *handled += 1;
            *failures = st.failures;
        });
        Ok(())
    }
}

/// The first `try_cast` and `cast` on a handle just decoded, 1,000 times,
/// each on a handle to a new export (a route the relay's node never
/// opened): none fails, and every message arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_casts_on_a_handle_just_received_arrive() {
    within(T, async {
        let (a, b, b_id) = two_nodes().await;
        let (handled, mut relayed) = watch::channel((0, 0));
        let (relay, _) = Actor::spawn(None, Relay, handled).await.unwrap();
        export(&b, Some("relay"), relay).unwrap();
        let relay = lookup::<Forward>(&a, b_id, "relay").await.unwrap();
        let (counted, mut count) = watch::channel(0);
        let (tally, _) = Actor::spawn(None, Tally, (0, counted)).await.unwrap();

        const N: u64 = 1_000;
        let mut exports = Vec::new();
        for n in 0..N {
            // A new export: a new actor id, so a new route on B.
            let fresh = RemoteActorRef::from(export(&a, None, tally.clone()).unwrap());
            relay.send(Forward(fresh.clone(), n)).await.unwrap();
            exports.push(fresh);
        }
        let (_, failures) = *relayed.wait_for(|(handled, _)| *handled == N).await.unwrap();
        assert_eq!(failures, 0, "no first send failed");
        count.wait_for(|c| *c == 2 * N).await.unwrap();
    })
    .await;
}
