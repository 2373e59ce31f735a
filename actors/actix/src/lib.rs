//! actix adapter for [tether]: actix actors reachable from other processes
//! through an `Addr`-like handle.
//!
//! ```text
//!  node A                                        node B
//!  RemoteAddr<M>::send(msg) ──▶ Envelope<M> ══ tether ══▶ Addr<A>::send(msg)
//!        ▲                     (msg + reply port)              │ Handler<M>
//!        └──────────── M::Result ◀══ tether ══════════════════┘
//! ```
//!
//! [`export`] turns an actor's [`actix::Addr`] into a [`RemoteAddr<M>`]
//! (actix's `Recipient<M>` across processes); [`lookup`] finds a named
//! export on a peer. A `RemoteAddr` is `Serialize + Deserialize`, so it
//! travels inside messages and is live wherever it arrives. The handler's
//! [`actix::Message::Result`] comes back by itself: any `MessageResponse`
//! works, as long as the result is serializable.
//!
//! Everything runs on the tokio runtime of an actix [`actix::System`] (or
//! any tokio runtime): tether's tasks land where its `Node` methods are
//! first called. A node may also run on its own multi-threaded runtime
//! while the actors live in a `System`; calls from either side work.
//!
//! # Example
//!
//! ```
//! use actix::prelude::*;
//! use serde::{Deserialize, Serialize};
//! use tether::{Config, Node};
//!
//! #[derive(Message, Serialize, Deserialize)]
//! #[rtype(result = "usize")]
//! struct Measure(String);
//!
//! struct Ruler;
//! impl Actor for Ruler {
//!     type Context = Context<Self>;
//! }
//! impl Handler<Measure> for Ruler {
//!     type Result = usize;
//!     fn handle(&mut self, Measure(text): Measure, _: &mut Context<Self>) -> usize {
//!         text.len()
//!     }
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! System::new().block_on(async {
//!     let here = Node::new(Some("here"), Config::default())?;
//!     let there = Node::new(Some("there"), Config::default())?;
//!     let addr = there.listen("127.0.0.1:0").await?;
//!     let peer = here.connect(&addr.to_string()).await?;
//!
//!     tether_actix::export(&there, Some("ruler"), Ruler.start())?;
//!     let ruler = tether_actix::lookup::<Measure>(&here, peer, "ruler").await?;
//!     assert_eq!(ruler.send(Measure("how long?".into())).await?, 9);
//!     Ok(())
//! })
//! # }
//! ```
//!
//! # Sending
//!
//! `do_send`, `try_send` and `send` keep actix's meaning: `do_send` never
//! fails and never waits (what finds no room waits in the node's bounded
//! outbox), `try_send` fails with `Full` when the window is full, `send`
//! queues at once and waits for the result. See [`RemoteAddr`] for the
//! bounds, and [`DEFAULT_TIMEOUT`] for `send`. Messages from one handle
//! (and its clones) reach the actor in the order they were accepted.
//!
//! # Actors that handle several message types
//!
//! [`ActorExport`] exports an actor once, under one name, for every message
//! type listed; [`lookup_actor`] finds it as a [`RemoteActor`], whose
//! `send`, `do_send`, `try_send` and `tell` take any of those types, each
//! typed by its message. [`RemoteActor::addr`] gives the [`RemoteAddr<M>`]
//! for one type, and [`RemoteAddr::recipient`] an actix [`actix::Recipient`]
//! for code that wants one. Every message sent through a `RemoteActor`
//! travels on the actor's one route, so they arrive in the order sent,
//! whatever their types, as through a local `Addr`.
//!
//! # Errors
//!
//! [`RemoteMailboxError`] converts into actix's [`actix::MailboxError`]
//! with `try_from` where the meaning matches (stopped or unreachable is
//! `Closed`, a timeout `Timeout`); [`TellErrorExt::into_send_error`] gives
//! actix's `SendError` for a [`tether::TellError`] the same way. A message
//! or result that could not be carried has no actix equivalent and is
//! never reported as a closed mailbox.
//!
//! # Death watch
//!
//! [`RemoteAddr::monitor`] is a future of [`tether::WatchEvent`];
//! [`RemoteAddr::watch`] delivers it to a local actor as a [`Terminated`]
//! message. It says why the actor can no longer be reached: it stopped (with
//! its reason, if its framework gives one: an actix actor's never does, a
//! ractor actor's does), it failed (a ractor actor's error or panic text),
//! or its node left, was lost or restarted.
//!
//! # Clusters
//!
//! [`subscribe`] delivers a [`tether::cluster::Cluster`]'s membership
//! events to an actor as [`ClusterUpdate`] messages.
//!
//! # Cluster names and groups
//!
//! On the member where an actor runs, [`register`] claims a name for its
//! `Addr` across the cluster and [`join_group`] makes it a member of a
//! process group (Erlang's `pg` model: groups by name, optionally in a
//! scope). From any member, [`lookup_name`] finds it as a [`RemoteAddr`],
//! [`group_members`] lists a group's members, and [`group`] gives a
//! [`RemoteGroup`]: `do_send`, `try_send`, `tell` and `send` to one member
//! (round robin, or by key), and `broadcast` to all. [`watch_group`] and
//! [`watch_name`] deliver changes to an actor as [`GroupUpdate`] and
//! [`NameUpdate`] messages. An actor leaves its names and groups when it
//! stops or its node leaves. Each `Addr` is exported once per message type
//! however often it is registered or joined, so it is one member.
//!
//! ```
//! use actix::prelude::*;
//! use serde::{Deserialize, Serialize};
//! use tether::cluster::{Cluster, ClusterConfig};
//! use tether::{Config, Node};
//!
//! #[derive(Message, Serialize, Deserialize)]
//! #[rtype(result = "u64")]
//! struct Square(u64);
//!
//! struct Worker;
//! impl Actor for Worker {
//!     type Context = Context<Self>;
//! }
//! impl Handler<Square> for Worker {
//!     type Result = u64;
//!     fn handle(&mut self, Square(n): Square, _: &mut Context<Self>) -> u64 {
//!         n * n
//!     }
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! System::new().block_on(async {
//!     let node = Node::new(Some("one"), Config::default())?;
//!     let addr = node.listen("127.0.0.1:0").await?;
//!     let cluster = Cluster::join(&node, addr, ClusterConfig::default()).await?;
//!
//!     // Where the actors run:
//!     let (_, _claim) = tether_actix::register::<_, Square>(&cluster, "squarer", Worker.start())?;
//!     tether_actix::join_group::<_, Square>(&cluster, "workers", Worker.start())?;
//!
//!     // On any member (this one included):
//!     let squarer = tether_actix::lookup_name::<Square>(&cluster, "squarer").await?;
//!     assert_eq!(squarer.send(Square(3)).await?, 9);
//!     let workers = tether_actix::group::<Square>(&cluster, "workers");
//!     assert_eq!(workers.send(Square(4)).await?, 16);
//!     Ok(())
//! })
//! # }
//! ```
#![warn(unreachable_pub, missing_docs)]

mod any_msg;
mod cluster;
mod envelope;
mod error;
mod export;
mod forward;
mod group;
mod registry;
mod remote_actor;
mod remote_addr;

pub use cluster::{subscribe, ClusterUpdate};
pub use envelope::Envelope;
pub use error::{RemoteMailboxError, TellErrorExt};
pub use export::export;
pub use group::{group, RemoteGroup};
pub use registry::{
    group_members, join_group, leave_group, lookup_all, lookup_name, register, unregister, watch_group, watch_name,
    GroupUpdate, NameUpdate,
};
pub use remote_actor::{lookup_actor, ActorExport, ActorExporter, RemoteActor};
pub use remote_addr::{lookup, RemoteAddr, Terminated, DEFAULT_TIMEOUT};
pub use tether::cluster::Broadcast;
