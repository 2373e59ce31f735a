//! ractor adapter for tether: remote actors in ractor's idiom.
//!
//! A ractor actor becomes reachable from other processes by [`export`]ing
//! its `ActorRef` on a [`tether::Node`]. Peers find it by name with
//! [`lookup`] and get a [`RemoteActorRef`], which works like an `ActorRef`:
//! [`cast`](RemoteActorRef::cast) a message, or
//! [`call`](RemoteActorRef::call) with a reply port built into the message.
//! A `RemoteActorRef` is serializable, so it can itself travel inside
//! messages, and [`watch`] tells a local actor when a remote one is gone.
//!
//! ```text
//!  node A                                         node B
//!  RemoteActorRef::cast / send / call             exported ActorRef<M>
//!    │ tether RemoteRef: serialize M, windows        ▲ ActorRef::cast(M)
//!    ▼                                               │
//!  connection (mux, TCP) ─────────────────────────▶ node: decode M, per-sender order
//! ```
//!
//! Messages are ordinary serde enums. Where a local actor's message holds
//! ractor's `RpcReplyPort<R>`, a remote one holds [`tether::ReplyPort<R>`],
//! which travels with the message and answers the caller's `call`.
//!
//! Backpressure: the sender's memory is bounded by the connection's windows;
//! [`cast`](RemoteActorRef::cast) fails with `Full` instead of queueing more,
//! [`send`](RemoteActorRef::send) waits. On the actor's node, messages are
//! handed to ractor's mailbox as they arrive, and ractor mailboxes are
//! unbounded: a slow actor queues there, not at the sender.
//!
//! This crate never enables ractor's `cluster` feature, so message types
//! are plain Rust enums, as in any ractor program.
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
//! let (counter, _) = Actor::spawn(None, Counter, ()).await?;
//! tether_ractor::export(&b, Some("counter"), counter)?;
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

mod error;
mod export;
mod remote_ref;
mod watch;

pub use error::CallError;
pub use export::export;
pub use remote_ref::{lookup, RemoteActorRef};
pub use watch::{watch, Watch};

/// The core crate, for [`Node`](tether::Node), [`ReplyPort`](tether::ReplyPort),
/// [`WatchEvent`](tether::WatchEvent) and the error types.
pub use tether;
