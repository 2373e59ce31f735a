//! A chat room: a ractor actor in one process, members in two others, one
//! an actix actor and one a ractor actor.
//!
//! ```sh
//! cargo run --example chat
//! ```
//!
//! The first process runs the room, exported as "room", and starts two
//! copies of itself: alice (an actix actor) and bob (a ractor actor). Each
//! looks the room up and joins by sending its *own* ref inside a `Join`;
//! the room keeps those refs, broadcasts every line to all members, and
//! watches each one. Members leave by stopping; the room learns it from the
//! death watch and tells the others. The conversation is scripted, so the
//! run ends by itself:
//!
//! - alice greets as soon as she knows someone else is in the room;
//! - bob answers her greeting; alice says goodbye, and stops once the room
//!   has echoed her goodbye back (so everyone has it);
//! - bob, told that alice left, says goodbye and stops the same way;
//! - the room, empty, waits for both processes and exits.

use std::error::Error;
use std::process::ExitCode;
use std::time::Duration;

use actix::prelude::*;
use ractor::{ActorProcessingErr, ActorRef};
use serde::{Deserialize, Serialize};
use tether::{Config, Monitor, Node, NodeId, WatchEvent};
use tether_actix::RemoteAddr;
use tether_ractor::RemoteActorRef;

/// How long any process may take in all before it gives up.
const LIMIT: Duration = Duration::from_secs(20);

// ---- the messages ----

/// What the room takes.
#[derive(Serialize, Deserialize)]
enum RoomMsg {
    /// A member joins; `member` is its own ref, where the room will send
    /// everything said from now on.
    Join { name: String, member: Member },
    /// A line for everyone.
    Say { from: String, text: String },
    /// Local only: the death watch on a member fired.
    Gone { name: String, why: WatchEvent },
}

/// A member's ref: an actix address or a ractor ref. Both serialize the
/// same way, and the room treats them alike.
#[derive(Clone, Serialize, Deserialize)]
enum Member {
    Actix(RemoteAddr<Event>),
    Ractor(RemoteActorRef<Event>),
}

/// What the room sends to members. An actix message (for alice) and, like
/// any `Send + 'static` type, a ractor message (for bob).
#[derive(Message, Clone, Debug, Serialize, Deserialize)]
#[rtype(result = "()")]
enum Event {
    /// Sent to a new member first: who else is here.
    Welcome {
        members: Vec<String>,
    },
    Joined(String),
    Said {
        from: String,
        text: String,
    },
    Left(String),
}

impl Member {
    async fn tell(&self, ev: Event) -> bool {
        match self {
            Member::Actix(addr) => addr.tell(ev).await.is_ok(),
            Member::Ractor(r) => r.send(ev).await.is_ok(),
        }
    }

    fn monitor(&self) -> Monitor {
        match self {
            Member::Actix(addr) => addr.monitor(),
            Member::Ractor(r) => r.monitor(),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Member::Actix(_) => "an actix actor",
            Member::Ractor(_) => "a ractor actor",
        }
    }
}

fn main() -> Result<ExitCode, Box<dyn Error>> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize| args.get(i).cloned().ok_or("usage: chat [--actix-member|--ractor-member NAME ADDR]");
    let role = args.get(1).map(String::as_str);
    let outcome = match role {
        Some("--actix-member") => {
            let (name, addr) = (arg(2)?, arg(3)?);
            System::new().block_on(async { bounded(&name, actix_member(name.clone(), addr)).await })
        }
        Some("--ractor-member") => {
            let (name, addr) = (arg(2)?, arg(3)?);
            // One thread, like alice's actix `System`: the node tells the room's
            // watch that bob stopped before `leave_when_stopped` closes the link.
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(bounded(&name, ractor_member(name.clone(), addr)))
        }
        _ => {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
            rt.block_on(bounded("room", room_process()))
        }
    };
    outcome.map(|()| ExitCode::SUCCESS)
}

async fn bounded(
    who: &str,
    f: impl std::future::Future<Output = Result<(), Box<dyn Error>>>,
) -> Result<(), Box<dyn Error>> {
    match tokio::time::timeout(LIMIT, f).await {
        Ok(r) => r.map_err(|e| format!("{who}: {e}").into()),
        Err(_) => Err(format!("{who}: gave up after {LIMIT:?}").into()),
    }
}

// ---- the room (ractor) ----

struct Room;

struct RoomState {
    members: Vec<(String, Member)>,
    /// Told once the last member has left.
    empty: Option<tokio::sync::oneshot::Sender<()>>,
}

impl RoomState {
    async fn broadcast(&self, ev: Event) {
        for (_, member) in &self.members {
            // A member that is gone is noticed by its death watch.
            let _ = member.tell(ev.clone()).await;
        }
    }
}

impl ractor::Actor for Room {
    type Msg = RoomMsg;
    type State = RoomState;
    type Arguments = tokio::sync::oneshot::Sender<()>;

    async fn pre_start(
        &self,
        _: ActorRef<RoomMsg>,
        empty: tokio::sync::oneshot::Sender<()>,
    ) -> Result<RoomState, ActorProcessingErr> {
        Ok(RoomState { members: Vec::new(), empty: Some(empty) })
    }

    async fn handle(
        &self,
        myself: ActorRef<RoomMsg>,
        msg: RoomMsg,
        st: &mut RoomState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            RoomMsg::Join { name, member } => {
                say("room", format!("* {name} joined ({}, on its own node); its ref came inside Join", member.kind()));
                let gone = member.monitor();
                let who = name.clone();
                tokio::spawn(async move {
                    let _ = myself.cast(RoomMsg::Gone { name: who, why: gone.await });
                });
                let members = st.members.iter().map(|(n, _)| n.clone()).collect();
                member.tell(Event::Welcome { members }).await;
                st.broadcast(Event::Joined(name.clone())).await;
                st.members.push((name, member));
            }
            RoomMsg::Say { from, text } => {
                say("room", format!("{from}: {text}"));
                st.broadcast(Event::Said { from, text }).await;
            }
            RoomMsg::Gone { name, why } => {
                // "the actor stopped", "the actor's node was lost", ...
                say("room", format!("* {name} left ({why}, said the death watch)"));
                st.members.retain(|(n, _)| *n != name);
                st.broadcast(Event::Left(name)).await;
                if st.members.is_empty() {
                    if let Some(empty) = st.empty.take() {
                        let _ = empty.send(());
                    }
                }
            }
        }
        Ok(())
    }
}

async fn room_process() -> Result<(), Box<dyn Error>> {
    let node = Node::new(Some("room-node"), Config::default())?;
    let addr = node.listen("127.0.0.1:0").await?.to_string();
    let (empty, mut emptied) = tokio::sync::oneshot::channel();
    let (room, room_task) = ractor::Actor::spawn(None, Room, empty).await?;
    tether_ractor::export(&node, Some("room"), room.clone())?;
    say("room", format!("room exported as \"room\" on {addr}; starting alice (actix) and bob (ractor)"));

    let exe = std::env::current_exe()?;
    // Dropping a handle (on any early return) kills that process.
    let spawn = |role: &str, name: &str| {
        tokio::process::Command::new(&exe).args([role, name, &addr]).kill_on_drop(true).spawn()
    };
    let mut alice = spawn("--actix-member", "alice")?;
    let mut bob = spawn("--ractor-member", "bob")?;

    // Wait until the room is empty and both processes have exited, in any
    // order; a member process that fails ends the wait at once.
    let (mut empty, mut a, mut b) = (false, None, None);
    while !empty || a.is_none() || b.is_none() {
        tokio::select! {
            e = &mut emptied, if !empty => {
                e.map_err(|_| "the room stopped early")?;
                empty = true;
            }
            s = alice.wait(), if a.is_none() => a = Some(exited("alice", s?)?),
            s = bob.wait(), if b.is_none() => b = Some(exited("bob", s?)?),
        }
    }
    if let (Some(a), Some(b)) = (a, b) {
        say("room", format!("empty; alice's process exited ({a}), bob's ({b})"));
    }
    room.stop(None);
    let _ = room_task.await;
    Ok(())
}

fn exited(who: &str, status: std::process::ExitStatus) -> Result<std::process::ExitStatus, Box<dyn Error>> {
    if status.success() {
        Ok(status)
    } else {
        Err(format!("{who}'s process failed ({status})").into())
    }
}

// ---- alice: an actix member ----

struct Alice {
    room: RemoteActorRef<RoomMsg>,
    greeted: bool,
    /// She said goodbye; she stops once the room has echoed it back.
    leaving: bool,
}

impl Alice {
    fn say(&mut self, ctx: &mut Context<Self>, text: String) {
        let room = self.room.clone();
        let line = RoomMsg::Say { from: "alice".into(), text };
        // `send` waits for room in the window: run it beside the actor, in order.
        ctx.wait(
            async move {
                if let Err(e) = room.send(line).await {
                    say("alice", format!("could not talk to the room: {e}"));
                }
            }
            .into_actor(self),
        );
    }

    fn greet(&mut self, ctx: &mut Context<Self>, who: &str) {
        if !std::mem::replace(&mut self.greeted, true) {
            self.say(ctx, format!("hi {who}! alice here, an actix actor in pid {}", std::process::id()));
        }
    }
}

impl Actor for Alice {
    type Context = Context<Self>;
}

impl Handler<Event> for Alice {
    type Result = ();

    fn handle(&mut self, ev: Event, ctx: &mut Context<Self>) {
        match ev {
            Event::Welcome { members } => {
                say("alice", format!("<- welcome; already here: {members:?}"));
                if let Some(first) = members.first() {
                    self.greet(ctx, first);
                }
            }
            Event::Joined(who) => {
                say("alice", format!("<- {who} joined"));
                self.greet(ctx, &who);
            }
            // Her own line, echoed: everyone has it now.
            Event::Said { from, .. } if from == "alice" => {
                if self.leaving {
                    ctx.stop();
                }
            }
            Event::Said { from, text } => {
                say("alice", format!("<- {from}: {text}"));
                if !self.leaving {
                    self.leaving = true;
                    self.say(ctx, "nice to meet you, bye!".into());
                }
            }
            Event::Left(who) => say("alice", format!("<- {who} left")),
        }
    }
}

async fn actix_member(name: String, addr: String) -> Result<(), Box<dyn Error>> {
    let node = Node::new(Some(&name), Config::default())?;
    let room_node = node.connect(&addr).await?;
    let room = tether_ractor::lookup::<RoomMsg>(&node, room_node, "room").await?;
    let alice = Alice { room: room.clone(), greeted: false, leaving: false }.start();
    let me = tether_actix::export(&node, None, alice)?;
    let stopped = me.monitor();
    say(&name, "looked up \"room\"; joining with my own address");
    room.send(RoomMsg::Join { name: name.clone(), member: Member::Actix(me) }).await?;
    leave_when_stopped(&node, room_node, &name, stopped).await
}

// ---- bob: a ractor member ----

struct Bob;

struct BobState {
    room: RemoteActorRef<RoomMsg>,
    /// He said goodbye; he stops once the room has echoed it back.
    leaving: bool,
}

impl BobState {
    async fn say(&self, text: &str) -> Result<(), ActorProcessingErr> {
        let line = RoomMsg::Say { from: "bob".into(), text: text.into() };
        self.room.send(line).await.map_err(|e| e.to_string())?;
        Ok(())
    }
}

impl ractor::Actor for Bob {
    type Msg = Event;
    type State = BobState;
    type Arguments = RemoteActorRef<RoomMsg>;

    async fn pre_start(
        &self,
        _: ActorRef<Event>,
        room: RemoteActorRef<RoomMsg>,
    ) -> Result<BobState, ActorProcessingErr> {
        Ok(BobState { room, leaving: false })
    }

    async fn handle(&self, myself: ActorRef<Event>, ev: Event, st: &mut BobState) -> Result<(), ActorProcessingErr> {
        match ev {
            Event::Welcome { members } => say("bob", format!("<- welcome; already here: {members:?}")),
            Event::Joined(who) => say("bob", format!("<- {who} joined")),
            // His own line, echoed: everyone has it now.
            Event::Said { from, .. } if from == "bob" => {
                if st.leaving {
                    myself.stop(None);
                }
            }
            Event::Said { from, text } => {
                say("bob", format!("<- {from}: {text}"));
                if text.starts_with("hi") {
                    let answer = format!("hello {from}, bob here, a ractor actor in pid {}", std::process::id());
                    st.say(&answer).await?;
                }
            }
            Event::Left(who) => {
                say("bob", format!("<- {who} left; leaving too"));
                st.leaving = true;
                st.say("bye, room!").await?;
            }
        }
        Ok(())
    }
}

async fn ractor_member(name: String, addr: String) -> Result<(), Box<dyn Error>> {
    let node = Node::new(Some(&name), Config::default())?;
    let room_node = node.connect(&addr).await?;
    let room = tether_ractor::lookup::<RoomMsg>(&node, room_node, "room").await?;
    let (bob, _task) = ractor::Actor::spawn(None, Bob, room.clone()).await?;
    let me = RemoteActorRef::from(tether_ractor::export(&node, None, bob)?);
    let stopped = me.monitor();
    say(&name, "looked up \"room\"; joining with my own ref");
    room.send(RoomMsg::Join { name: name.clone(), member: Member::Ractor(me) }).await?;
    leave_when_stopped(&node, room_node, &name, stopped).await
}

/// Waits until the member's actor has stopped, then closes the connection
/// gracefully (what is queued, such as the room's watch notice, goes out
/// first) and lets the process exit.
async fn leave_when_stopped(
    node: &Node,
    room_node: NodeId,
    name: &str,
    stopped: Monitor,
) -> Result<(), Box<dyn Error>> {
    let conn = node.connection(room_node).ok_or("no connection to the room")?;
    tokio::select! {
        _ = stopped => {}
        end = conn.closed() => return Err(format!("the room's node went away first: {end}").into()),
    }
    say(name, "stopped; closing the connection and exiting");
    conn.close().await;
    Ok(())
}

/// One line of output, prefixed with who says it and its process id.
fn say(who: &str, line: impl std::fmt::Display) {
    println!("[{who:<5} pid {:>6}] {line}", std::process::id());
}
