//! Backpressure from a slow ractor actor, exported with `export_paced`, to
//! its senders on another node, over TCP on 127.0.0.1.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{two_nodes_with, within, CALL, T};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use serde::{Deserialize, Serialize};
use tether::{Config, ReplyPort, TellError, WatchEvent};
use tether_ractor::{export_paced, lookup, Paced, RemoteActorRef};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// Fewer than this many of a route's messages may be in a paced actor's
/// mailbox (`export_paced`'s documented bound).
const MAILBOX_BOUND: usize = 512;
/// A `send` still pending after this long is held back by the actor, not
/// by a credit on its way back.
const HELD: Duration = Duration::from_secs(1);
/// More than the windows and the mailbox bound hold together: a sender that
/// gets this far was never held back.
const FLOOD: u64 = 100_000;

#[derive(Serialize, Deserialize, Debug)]
enum LogMsg {
    /// Blocks the actor until the test opens its gate.
    Wait,
    Item(u64),
    /// Answered once everything sent before it was handled.
    Done(ReplyPort<()>),
    /// Cast on the `ActorRef`, around tether: marks how many items were in
    /// the mailbox ahead of it. Last: serde numbers the variants it decodes
    /// without the skipped ones.
    #[serde(skip)]
    Probe,
}

/// What the actor handled, in order.
#[derive(Debug, PartialEq)]
enum Seen {
    Item(u64),
    Probe,
}

type Log = Arc<Mutex<Vec<Seen>>>;

struct Logger;

impl Actor for Logger {
    type Msg = LogMsg;
    type State = (Arc<Notify>, Log);
    type Arguments = (Arc<Notify>, Log);

    async fn pre_start(&self, _: ActorRef<LogMsg>, args: Self::Arguments) -> Result<Self::State, ActorProcessingErr> {
        Ok(args)
    }

    async fn handle(
        &self,
        _: ActorRef<LogMsg>,
        msg: LogMsg,
        (gate, log): &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            LogMsg::Wait => gate.notified().await,
            LogMsg::Item(i) => log.lock().unwrap().push(Seen::Item(i)),
            LogMsg::Probe => log.lock().unwrap().push(Seen::Probe),
            LogMsg::Done(reply) => {
                let _ = reply.send(());
            }
        }
        Ok(())
    }
}

/// Small windows, so that they fill with few messages.
fn small_windows() -> Config {
    let mut cfg = Config::default();
    cfg.chunk_size = 4 * 1024;
    cfg.port_window = 8 * 1024;
    cfg.send_buffer = 8 * 1024;
    cfg
}

/// A paced logger on B, blocked on `Wait`, and A's handle to it.
struct Blocked {
    a: tether::Node,
    _b: tether::Node,
    actor: Paced<LogMsg>,
    remote: RemoteActorRef<LogMsg>,
    gate: Arc<Notify>,
    log: Log,
}

async fn blocked_logger() -> Blocked {
    let (a, b, b_id) = two_nodes_with(small_windows()).await;
    let gate = Arc::new(Notify::new());
    let log = Log::default();
    let (actor, _) = Paced::spawn(None, Logger, (gate.clone(), log.clone())).await.unwrap();
    export_paced(&b, Some("log"), actor.clone()).unwrap();
    let remote = lookup::<LogMsg>(&a, b_id, "log").await.unwrap();
    remote.send(LogMsg::Wait).await.unwrap();
    Blocked { a, _b: b, actor, remote, gate, log }
}

/// Casts items 0, 1, .. until the actor holds the sender back: a `cast`
/// fails with `Full` and the `send` of the same item then stays pending for
/// [`HELD`]. (`Full` alone may only mean that a credit is on its way back.)
/// Returns the pending send, which owns item `n - 1`, and `n`.
async fn flood_until_held(remote: &RemoteActorRef<LogMsg>) -> (JoinHandle<Result<(), TellError<LogMsg>>>, u64) {
    let mut next = 0;
    loop {
        assert!(next < FLOOD, "{next} items went through while the actor was blocked: nothing held the sender back");
        match remote.try_cast(LogMsg::Item(next)) {
            Ok(()) => next += 1,
            Err(TellError::Full(msg)) => {
                let r = remote.clone();
                let mut send = tokio::spawn(async move { r.send(msg).await });
                next += 1;
                match tokio::time::timeout(HELD, &mut send).await {
                    Ok(sent) => sent.unwrap().unwrap(),
                    Err(_) => return (send, next),
                }
            }
            Err(e) => panic!("cast {next} failed: {e:?}"),
        }
    }
}

/// The acceptance test of pacing: a blocked actor holds its remote sender
/// back (`cast` gets `Full`, `send` waits) while fewer than 512 messages are
/// in its mailbox, and once it catches up every message arrives once, in
/// order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_paced_actor_holds_its_remote_sender_back() {
    within(T, async {
        let Blocked { a: _a, _b, actor, remote, gate, log } = blocked_logger().await;
        let (held, sent) = flood_until_held(&remote).await;
        let refused = remote.try_cast(LogMsg::Item(sent));
        assert!(matches!(refused, Err(TellError::Full(LogMsg::Item(i))) if i == sent), "{refused:?}");

        // The probe lands behind everything the node has put in the mailbox.
        actor.cast(LogMsg::Probe).unwrap();
        gate.notify_one();
        within(Duration::from_secs(10), held).await.unwrap().unwrap();
        // The actor keeps up now; these flow as usual.
        let total = sent + 1_000;
        for i in sent..total {
            remote.send(LogMsg::Item(i)).await.unwrap();
        }
        remote.ask(LogMsg::Done, CALL).await.unwrap();

        let log = log.lock().unwrap();
        let ahead = log.iter().position(|s| *s == Seen::Probe).expect("the probe was handled");
        // `Wait` was in the mailbox too.
        assert!(
            ahead + 1 < MAILBOX_BOUND,
            "{} of the route's messages were in the mailbox (bound {MAILBOX_BOUND}); the sender had {sent} accepted",
            ahead + 1
        );
        let items: Vec<u64> = log
            .iter()
            .filter_map(|s| match s {
                Seen::Item(i) => Some(*i),
                Seen::Probe => None,
            })
            .collect();
        assert_eq!(items.len() as u64, total, "every item arrived once");
        assert!(items.iter().copied().eq(0..total), "items arrived in the order sent");
    })
    .await;
}

/// A kill ends the wait: the held-back send returns at once, told that the
/// actor is gone, and the export's watchers learn it was killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_held_back_by_a_paced_actor_ends_when_the_actor_is_killed() {
    within(T, async {
        let Blocked { a: _a, _b, actor, remote, gate: _gate, log: _log } = blocked_logger().await;
        let monitor = remote.monitor();
        let (held, _) = flood_until_held(&remote).await;

        actor.kill();
        let sent = within(Duration::from_secs(5), held).await.unwrap();
        assert!(matches!(sent, Err(TellError::Unreachable { .. })), "{sent:?}");
        // ractor's own reason for a kill.
        assert_eq!(
            within(Duration::from_secs(5), monitor).await,
            WatchEvent::Stopped { reason: Some("killed".into()) }
        );
    })
    .await;
}
