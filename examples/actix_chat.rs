//! actix's chat server, across two nodes: the `ChatServer` actor and its
//! five message types as in actix's own example (`websocket-chat`'s
//! `server.rs`), exported once under one name; sessions on another node
//! find it with one lookup and talk to it through one handle.
//!
//! What changed from the local program, and nothing else:
//! - the messages derive `Serialize` and `Deserialize`;
//! - `Connect` carries the session's `RemoteAddr<Message>` where it carried
//!   a `Recipient<Message>`, so that it can travel;
//! - the server is exported with `ActorExport` (one line per message type)
//!   and the sessions' node looks it up with `lookup_actor`.
//!
//! Run with `cargo run --example actix_chat`.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use actix::prelude::*;
use serde::{Deserialize, Serialize};
use tether::{Config, Node};
use tether_actix::{lookup_actor, ActorExport, RemoteActor, RemoteAddr};

// ---- the chat server, as in actix's example ----

/// A line for a session to print.
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "()")]
pub struct Message(pub String);

/// A new session; the server answers with its id.
#[derive(Message, Serialize, Deserialize)]
#[rtype(usize)]
pub struct Connect {
    pub addr: RemoteAddr<Message>,
}

#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "()")]
pub struct Disconnect {
    pub id: usize,
}

/// A line from session `id` to everyone else in `room`.
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "()")]
pub struct ClientMessage {
    pub id: usize,
    pub msg: String,
    pub room: String,
}

#[derive(Serialize, Deserialize)]
pub struct ListRooms;

impl actix::Message for ListRooms {
    type Result = Vec<String>;
}

/// Session `id` moves to room `name`.
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "()")]
pub struct Join {
    pub id: usize,
    pub name: String,
}

pub struct ChatServer {
    sessions: HashMap<usize, RemoteAddr<Message>>,
    rooms: HashMap<String, HashSet<usize>>,
    next_id: usize,
}

impl ChatServer {
    fn new() -> ChatServer {
        let mut rooms = HashMap::new();
        rooms.insert("main".to_owned(), HashSet::new());
        ChatServer { sessions: HashMap::new(), rooms, next_id: 1 }
    }

    /// Sends `message` to everyone in `room` but `skip`.
    fn send_message(&self, room: &str, message: &str, skip: usize) {
        for id in self.rooms.get(room).into_iter().flatten() {
            if *id != skip {
                if let Some(addr) = self.sessions.get(id) {
                    addr.do_send(Message(message.to_owned()));
                }
            }
        }
    }
}

impl Actor for ChatServer {
    type Context = Context<Self>;
}

impl Handler<Connect> for ChatServer {
    type Result = usize;

    fn handle(&mut self, msg: Connect, _: &mut Context<Self>) -> usize {
        self.send_message("main", "Someone joined", 0);
        let id = self.next_id;
        self.next_id += 1;
        self.sessions.insert(id, msg.addr);
        self.rooms.entry("main".to_owned()).or_default().insert(id);
        id
    }
}

impl Handler<Disconnect> for ChatServer {
    type Result = ();

    fn handle(&mut self, msg: Disconnect, _: &mut Context<Self>) {
        let mut rooms = Vec::new();
        if self.sessions.remove(&msg.id).is_some() {
            for (name, sessions) in &mut self.rooms {
                if sessions.remove(&msg.id) {
                    rooms.push(name.to_owned());
                }
            }
        }
        for room in rooms {
            self.send_message(&room, "Someone disconnected", 0);
        }
    }
}

impl Handler<ClientMessage> for ChatServer {
    type Result = ();

    fn handle(&mut self, msg: ClientMessage, _: &mut Context<Self>) {
        self.send_message(&msg.room, msg.msg.as_str(), msg.id);
    }
}

impl Handler<ListRooms> for ChatServer {
    type Result = MessageResult<ListRooms>;

    fn handle(&mut self, _: ListRooms, _: &mut Context<Self>) -> Self::Result {
        let mut rooms: Vec<String> = self.rooms.keys().cloned().collect();
        rooms.sort();
        MessageResult(rooms)
    }
}

impl Handler<Join> for ChatServer {
    type Result = ();

    fn handle(&mut self, msg: Join, _: &mut Context<Self>) {
        let Join { id, name } = msg;
        let mut rooms = Vec::new();
        for (n, sessions) in &mut self.rooms {
            if sessions.remove(&id) {
                rooms.push(n.to_owned());
            }
        }
        for room in rooms {
            self.send_message(&room, "Someone disconnected", 0);
        }
        self.rooms.entry(name.clone()).or_default().insert(id);
        self.send_message(&name, "Someone connected", id);
    }
}

// ---- a session: prints what the server sends it ----

struct Session {
    name: &'static str,
    /// Told each line printed, so that `main` knows when the talk is over.
    heard: tokio::sync::mpsc::UnboundedSender<String>,
}

impl Actor for Session {
    type Context = Context<Self>;
}

impl Handler<Message> for Session {
    type Result = ();

    fn handle(&mut self, Message(text): Message, _: &mut Context<Self>) {
        println!("{} hears: {text}", self.name);
        let _ = self.heard.send(text);
    }
}

/// Connects a session named `name` on `node` to the server.
async fn connect(
    node: &Node,
    server: &RemoteActor,
    name: &'static str,
    heard: tokio::sync::mpsc::UnboundedSender<String>,
) -> Result<usize, Box<dyn std::error::Error>> {
    let session = Session { name, heard }.start();
    let addr = tether_actix::export::<_, Message>(node, None, session)?;
    Ok(server.send(Connect { addr }).await?)
}

#[actix::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The server's node exports the chat server once, for all five types.
    let server_node = Node::new(Some("chat-server"), Config::default())?;
    let listening = server_node.listen("127.0.0.1:0").await?;
    ActorExport::new(&server_node, Some("chat"), ChatServer::new().start())
        .handles::<Connect>()
        .handles::<Disconnect>()
        .handles::<ClientMessage>()
        .handles::<ListRooms>()
        .handles::<Join>()
        .finish()?;

    // The sessions' node finds it with one lookup.
    let node = Node::new(Some("sessions"), Config::default())?;
    let server_id = node.connect(&listening.to_string()).await?;
    let server = lookup_actor(&node, server_id, "chat").await?;

    let (heard, mut lines) = tokio::sync::mpsc::unbounded_channel();
    let alice = connect(&node, &server, "alice", heard.clone()).await?;
    let bob = connect(&node, &server, "bob", heard).await?;
    // One handle, one route: these arrive in the order sent, as through a
    // local `Addr`, whatever their types.
    server.do_send(Join { id: alice, name: "rust".into() });
    server.do_send(Join { id: bob, name: "rust".into() });
    server.do_send(ClientMessage { id: alice, msg: "hello, bob".into(), room: "rust".into() });
    println!("rooms: {:?}", server.send(ListRooms).await?);
    server.do_send(Disconnect { id: alice });

    // alice hears bob join "main", then bob arrive in "rust"; bob hears
    // alice's line, then her leaving.
    let expected = ["Someone joined", "Someone connected", "hello, bob", "Someone disconnected"];
    let mut heard = Vec::new();
    while !expected.iter().all(|e| heard.iter().any(|h: &String| h == e)) {
        match tokio::time::timeout(Duration::from_secs(10), lines.recv()).await {
            Ok(Some(line)) => heard.push(line),
            _ => return Err(format!("the talk stopped short; heard {heard:?}").into()),
        }
    }
    node.shutdown().await;
    server_node.shutdown().await;
    println!("done");
    Ok(())
}
