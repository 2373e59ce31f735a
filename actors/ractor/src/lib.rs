//! ractor adapter for tether: remote actors in ractor's idiom.
//!
//! A ractor actor becomes reachable from other processes by exporting it on
//! a [`tether::Node`]: spawn it with [`Paced::spawn`] (instead of ractor's
//! `Actor::spawn`) and [`export_paced`] it, or [`export`] any `ActorRef`.
//! Peers find it by name with [`lookup`] and get a [`RemoteActorRef`],
//! which works like an `ActorRef`: [`cast`](RemoteActorRef::cast) a
//! message, or [`call`](RemoteActorRef::call) with a reply port built into
//! the message. A `RemoteActorRef` is serializable, so it can itself travel
//! inside messages, and [`watch`] tells a local actor when a remote one is
//! gone and why: stopped with the reason given to its `stop`, failed with
//! its handler's error or panic message, or its node left, was lost or
//! restarted, as a [`tether::WatchEvent`] or a [`RemoteSupervisionEvent`]
//! shaped like ractor's `SupervisionEvent`.
//!
//! ```text
//!  node A                                         node B
//!  RemoteActorRef::cast / send / call             exported ActorRef<M>
//!    │ tether RemoteRef: serialize M, windows        ▲ ActorRef::cast(M), paced
//!    ▼                                               │
//!  connection (mux, TCP) ─────────────────────────▶ node: decode M, per-sender order
//! ```
//!
//! Messages are ordinary serde enums. Where a local actor's message holds
//! ractor's `RpcReplyPort<R>`, a remote one holds [`tether::ReplyPort<R>`],
//! which travels with the message and answers the caller's `call`.
//!
//! # Backpressure
//!
//! The sender's memory is bounded by the connection's windows and send
//! buffers: [`cast`](RemoteActorRef::cast) fails with `Full` instead of
//! queueing more, [`send`](RemoteActorRef::send) waits. What happens on the
//! actor's node depends on how the actor was exported:
//!
//! - [`export_paced`], for an actor spawned with [`Paced::spawn`] or
//!   [`Paced::spawn_linked`]: the node hands the actor messages no faster
//!   than it handles them. Fewer than 512 of one route's messages (those
//!   from one node) are in its mailbox at once (about 512 KiB of their
//!   encodings at most, plus one message); the rest wait in the route's
//!   window, so a slow actor makes its remote senders wait, as a slow actix
//!   actor does. [`Paced`] only counts the messages its actor handled: ractor
//!   tells a holder of an `ActorRef` nothing about the mailbox. Messages sent
//!   to the actor around tether (its `ActorRef`'s `cast`, ractor timers) are
//!   not paced, and each one it handles while tether's wait lets one more of
//!   tether's in (see [`export_paced`]).
//! - [`export`], for any `ActorRef`: ractor cannot tell when a plain actor
//!   handled a message, so the node hands it messages as they arrive and
//!   ractor's unbounded mailbox takes them all; a slow actor queues there,
//!   and its senders never wait for it.
//!
//! This crate never enables ractor's `cluster` feature, so message types
//! are plain Rust enums, as in any ractor program. It enables `monitors`
//! (additive: it adds `ActorCell::monitor`), through which the node learns
//! how an exported actor ended without touching its supervision.
//!
//! # Cluster names and groups
//!
//! Over a [`tether::cluster::Cluster`], [`registry`] and [`pg`] take the
//! shape of ractor's modules of the same names, cluster-wide:
//! [`registry::register`] claims a name for a running actor and
//! [`registry::where_is`] finds it from any member; [`pg::join`],
//! [`pg::leave`], [`pg::get_members`], [`pg::monitor`] and the rest work as
//! ractor's `pg` does, with members on every node, as [`RemoteActorRef`]s.
//! [`pg::group`] gives a [`RemoteGroup`] to `cast`, `send` or `call` one
//! member (round robin, or by key) or `broadcast` to all. [`subscribe`]
//! delivers the cluster's membership events to an actor.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//!
//! use ractor::{Actor, ActorProcessingErr, ActorRef};
//! use serde::{Deserialize, Serialize};
//! use tether::{Config, Node, ReplyPort};
//!
//! #[derive(Serialize, Deserialize)]
//! enum CounterMsg {
//!     Add(u64),
//!     Get(ReplyPort<u64>),
//! }
//!
//! struct Counter;
//!
//! impl Actor for Counter {
//!     type Msg = CounterMsg;
//!     type State = u64;
//!     type Arguments = ();
//!
//!     async fn pre_start(&self, _: ActorRef<CounterMsg>, _: ()) -> Result<u64, ActorProcessingErr> {
//!         Ok(0)
//!     }
//!
//!     async fn handle(&self, _: ActorRef<CounterMsg>, msg: CounterMsg, total: &mut u64) -> Result<(), ActorProcessingErr> {
//!         match msg {
//!             CounterMsg::Add(n) => *total += n,
//!             CounterMsg::Get(reply) => {
//!                 let _ = reply.send(*total);
//!             }
//!         }
//!         Ok(())
//!     }
//! }
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Node B runs the actor; node A reaches it over TCP.
//! let b = Node::new(Some("b"), Config::default())?;
//! let addr = b.listen("127.0.0.1:0").await?;
//! // Like `Actor::spawn`, and a slow counter makes its senders wait.
//! let (counter, _) = tether_ractor::Paced::spawn(None, Counter, ()).await?;
//! tether_ractor::export_paced(&b, Some("counter"), counter)?;
//!
//! let a = Node::new(Some("a"), Config::default())?;
//! let b_id = a.connect(&addr.to_string()).await?;
//! let remote = tether_ractor::lookup::<CounterMsg>(&a, b_id, "counter").await?;
//!
//! remote.send(CounterMsg::Add(2)).await?;
//! remote.send(CounterMsg::Add(3)).await?;
//! let total = remote.call(CounterMsg::Get, Duration::from_secs(5)).await?;
//! assert_eq!(total, 5);
//! # Ok(()) }
//! ```
#![warn(unreachable_pub, missing_docs)]

mod cluster;
mod error;
mod exit;
mod export;
mod group;
mod pace;
pub mod pg;
pub mod registry;
mod remote_ref;
mod watch;

pub use cluster::subscribe;
pub use error::CallError;
pub use export::{export, export_paced};
pub use group::RemoteGroup;
pub use pace::Paced;
pub use remote_ref::{lookup, RemoteActorRef};
pub use watch::{watch, RemoteSupervisionEvent, Watch, WatchMessage};

/// The core crate, for [`Node`](tether::Node), [`ReplyPort`](tether::ReplyPort),
/// [`WatchEvent`](tether::WatchEvent) and the error types.
pub use tether;
