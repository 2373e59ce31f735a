//! A ractor actor and an actix actor, in two OS processes, play ping-pong
//! through tether.
//!
//! ```sh
//! cargo run --example ping_pong
//! ```
//!
//! The first process runs a tether node with a ractor actor, `Pinger`,
//! exported as "pinger". It re-executes itself as a second process, which
//! runs an actix `System` with an actix actor, `Ponger`. Then:
//!
//! 1. The actix process connects, looks up "pinger" and `ask`s it with a
//!    `Hello` that carries the Ponger's own address: a ref inside a message.
//! 2. The Pinger pings that address three times; every `Ping` carries the
//!    Pinger's own ref, and the Ponger answers each on it with a `Pong`.
//! 3. The Pinger `send`s a `Count` and awaits the actix handler's result.
//! 4. It tells the Ponger `Bye`; the Ponger stops and its process exits.
//!    The Pinger has been watching it since the `Hello`, and learns that it
//!    is gone (`Stopped`, or `NodeLost` if the process went first).
//!
//! Every wait is bounded; on any failure the child process is killed and
//! the example exits with an error.

use std::error::Error;
use std::process::ExitCode;
use std::time::Duration;

use actix::prelude::*;
use ractor::{ActorProcessingErr, ActorRef};
use serde::{Deserialize, Serialize};
use tether::{Config, Node, ReplyPort, WatchEvent};
use tether_actix::RemoteAddr;
use tether_ractor::RemoteActorRef;

/// How long either process may take in all before it gives up.
const LIMIT: Duration = Duration::from_secs(15);
/// How long a single `ask` or `send` may wait for its answer.
const ANSWER: Duration = Duration::from_secs(5);
const PINGS: u32 = 3;

// ---- the messages: plain serde types, shared by both processes ----

/// What the ractor actor takes.
#[derive(Serialize, Deserialize)]
enum PingerMsg {
    /// An actix actor introduces itself: its own address travels inside the
    /// message, and the reply port comes back to the caller.
    Hello { ponger: RemoteAddr<PongerMsg>, reply: ReplyPort<String> },
    /// The answer to ping `n`.
    Pong(u32),
    /// Local only: the death watch on the Ponger fired.
    PongerGone(WatchEvent),
}

/// What the actix actor takes. Its handler returns the pings seen so far.
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "u32")]
enum PongerMsg {
    /// A ping that carries the ref to answer.
    Ping { n: u32, reply_to: RemoteActorRef<PingerMsg> },
    /// How many pings so far (asked with `send`, which awaits the result).
    Count,
    /// Stop.
    Bye,
}

fn main() -> Result<ExitCode, Box<dyn Error>> {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("--actix-peer") => {
            let addr = args.get(2).ok_or("--actix-peer needs the address to connect to")?.clone();
            let result = System::new().block_on(async { tokio::time::timeout(LIMIT, actix_process(addr)).await });
            match result {
                Ok(Ok(())) => Ok(ExitCode::SUCCESS),
                Ok(Err(e)) => Err(format!("actix process: {e}").into()),
                Err(_) => Err(format!("actix process: gave up after {LIMIT:?}").into()),
            }
        }
        _ => {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
            rt.block_on(ractor_process())?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

// ---- process 1: the ractor side ----

struct Pinger;

struct PingerState {
    /// The Pinger's own ref, exported on the node; it goes inside every ping.
    me: RemoteActorRef<PingerMsg>,
    ponger: Option<RemoteAddr<PongerMsg>>,
    done: Option<tokio::sync::oneshot::Sender<WatchEvent>>,
}

impl ractor::Actor for Pinger {
    type Msg = PingerMsg;
    type State = PingerState;
    type Arguments = (Node, tokio::sync::oneshot::Sender<WatchEvent>);

    async fn pre_start(
        &self,
        myself: ActorRef<PingerMsg>,
        (node, done): Self::Arguments,
    ) -> Result<PingerState, ActorProcessingErr> {
        // The actor exports itself, under a name peers can look up.
        let me = tether_ractor::export(&node, Some("pinger"), myself)?.into();
        Ok(PingerState { me, ponger: None, done: Some(done) })
    }

    async fn handle(
        &self,
        myself: ActorRef<PingerMsg>,
        msg: PingerMsg,
        st: &mut PingerState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            PingerMsg::Hello { ponger, reply } => {
                say("ractor", "<- ask Hello from the actix actor; its address came inside the message");
                // Death watch: this actor is told once the Ponger is gone.
                let gone = ponger.monitor();
                tokio::spawn(async move {
                    let _ = myself.cast(PingerMsg::PongerGone(gone.await));
                });
                let _ = reply.send(format!("welcome, I will ping you {PINGS} times"));
                st.ping(&ponger, 1).await?;
                st.ponger = Some(ponger);
            }
            PingerMsg::Pong(n) => {
                say("ractor", format!("<- pong {n}"));
                let ponger = st.ponger.clone().ok_or("pong before hello")?;
                if n < PINGS {
                    st.ping(&ponger, n + 1).await?;
                } else {
                    say("ractor", "send Count ->, awaiting the actix handler's result");
                    let count = ponger.send_timeout(PongerMsg::Count, ANSWER).await?;
                    say("ractor", format!("<- send Count returned {count}"));
                    say("ractor", "Bye ->, then wait for the death watch");
                    ponger.tell(PongerMsg::Bye).await.map_err(|_| "the Ponger is gone")?;
                }
            }
            PingerMsg::PongerGone(event) => {
                say("ractor", format!("death watch: the actix actor is gone: {event:?}"));
                if let Some(done) = st.done.take() {
                    let _ = done.send(event);
                }
            }
        }
        Ok(())
    }
}

impl PingerState {
    /// Pings with the Pinger's own ref inside, for the Ponger to answer on.
    async fn ping(&self, ponger: &RemoteAddr<PongerMsg>, n: u32) -> Result<(), ActorProcessingErr> {
        say("ractor", format!("ping {n} -> (carrying my own ref)"));
        let ping = PongerMsg::Ping { n, reply_to: self.me.clone() };
        ponger.tell(ping).await.map_err(|_| "the Ponger is gone")?;
        Ok(())
    }
}

async fn ractor_process() -> Result<(), Box<dyn Error>> {
    let node = Node::new(Some("ractor-node"), Config::default())?;
    let addr = node.listen("127.0.0.1:0").await?;
    let (done, mut watched) = tokio::sync::oneshot::channel();
    let (pinger, pinger_task) = ractor::Actor::spawn(None, Pinger, (node.clone(), done)).await?;
    say("ractor", format!("node {} listening on {addr}; Pinger exported as \"pinger\"", node.id()));
    say("ractor", "starting the actix process");

    // Dropping the handle (on any early return) kills the child.
    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .args(["--actix-peer", &addr.to_string()])
        .kill_on_drop(true)
        .spawn()?;

    // Wait for both the watch event and the child's exit, in either order;
    // a child that fails ends the wait at once.
    let (mut event, mut status) = (None::<WatchEvent>, None);
    let deadline = tokio::time::sleep(LIMIT);
    tokio::pin!(deadline);
    let (event, status) = loop {
        if let (Some(event), Some(status)) = (&event, status) {
            break (event.clone(), status);
        }
        tokio::select! {
            e = &mut watched, if event.is_none() => {
                event = Some(e.map_err(|_| "the Pinger stopped before its watch fired")?);
            }
            s = child.wait(), if status.is_none() => match s? {
                s if s.success() => status = Some(s),
                s => return Err(format!("the actix process failed ({s})").into()),
            },
            _ = &mut deadline => return Err(format!("no death watch event or no exit within {LIMIT:?}").into()),
        }
    };
    say("ractor", format!("the actix process exited ({status}); the death watch said {event:?}"));
    pinger.stop(None);
    let _ = pinger_task.await;
    say("ractor", "done");
    Ok(())
}

// ---- process 2: the actix side ----

struct Ponger {
    pings: u32,
}

impl Actor for Ponger {
    type Context = Context<Self>;

    fn stopped(&mut self, _: &mut Context<Self>) {
        say("actix", "Ponger stopped");
    }
}

impl Handler<PongerMsg> for Ponger {
    type Result = u32;

    fn handle(&mut self, msg: PongerMsg, ctx: &mut Context<Self>) -> u32 {
        match msg {
            PongerMsg::Ping { n, reply_to } => {
                self.pings += 1;
                say("actix", format!("<- ping {n}; pong {n} -> on the ref inside it"));
                // `send` waits for room in the window, so it runs beside the actor.
                actix::spawn(async move {
                    if let Err(e) = reply_to.send(PingerMsg::Pong(n)).await {
                        say("actix", format!("pong {n} not sent: {e}"));
                    }
                });
            }
            PongerMsg::Count => say("actix", format!("<- Count; the handler returns {}", self.pings)),
            PongerMsg::Bye => {
                say("actix", "<- Bye; stopping");
                ctx.stop();
            }
        }
        self.pings
    }
}

async fn actix_process(addr: String) -> Result<(), Box<dyn Error>> {
    let node = Node::new(Some("actix-node"), Config::default())?;
    let ractor_node = node.connect(&addr).await?;
    say("actix", format!("node {} connected to {ractor_node}", node.id()));

    // Exported without a name: the only way to reach it is the ref itself.
    let me = tether_actix::export(&node, None, Ponger { pings: 0 }.start())?;
    let stopped = me.monitor();

    let pinger = tether_ractor::lookup::<PingerMsg>(&node, ractor_node, "pinger").await?;
    say("actix", "looked up \"pinger\"; ask Hello -> with my own address inside");
    let welcome = pinger.ask(|reply| PingerMsg::Hello { ponger: me, reply }, ANSWER).await?;
    say("actix", format!("<- the ask returned {welcome:?}"));

    let conn = node.connection(ractor_node).ok_or("no connection to the ractor node")?;
    let event = tokio::select! {
        event = stopped => event,
        end = conn.closed() => return Err(format!("the ractor node went away first: {end}").into()),
    };
    say("actix", format!("my Ponger is {event:?}; closing the connection, exiting"));
    // Graceful: what is queued (the watch notice) goes out first.
    conn.close().await;
    Ok(())
}

/// One line of output, prefixed with the side and its process id.
fn say(side: &str, line: impl std::fmt::Display) {
    println!("[{side:<6} pid {:>6}] {line}", std::process::id());
}
