//! ractor adapter for tether: remote actors in ractor's idiom.
//!
//! A ractor actor becomes reachable from other processes by exporting it on
//! a [`tether::Node`]: [`export`] any `ActorRef`, or spawn it with
//! [`Paced::spawn`] (instead of ractor's `Actor::spawn`) and
//! [`export_paced`] it so that a slow actor makes its senders wait. Peers
//! find it by name with [`lookup`] and get a [`RemoteActorRef`], which has
//! `ActorRef`'s methods: ractor code keeps compiling against it.
//!
//! - `cast!`, `call!`, `call_t!`, [`cast`](RemoteActorRef::cast),
//!   [`send_message`](RemoteActorRef::send_message) and
//!   [`call`](RemoteActorRef::call) take it as they take an `ActorRef`, and
//!   fail with ractor's `MessagingErr` / `RactorErr` (see [Errors](#errors)).
//! - A message that carries ractor's `RpcReplyPort<R>` stays as it is; its
//!   field is marked `#[serde(with = "tether_ractor::rpc_reply")]` (see
//!   [`rpc_reply`] for how and for the one rule: such a message is sent with
//!   `call`).
//! - Where code wants an `ActorRef<M>` itself,
//!   [`to_actor_ref`](RemoteActorRef::to_actor_ref) makes a local proxy
//!   actor that forwards to the remote one.
//! - tether's own operations stay beside them, with errors that tell every
//!   case apart: [`post`](RemoteActorRef::post),
//!   [`try_cast`](RemoteActorRef::try_cast), [`send`](RemoteActorRef::send)
//!   (waits for room), and [`ask`](RemoteActorRef::ask) with tether's
//!   serializable [`ReplyPort`](tether::ReplyPort), which travels any way.
//!
//! A `RemoteActorRef` is serializable, so it can itself travel inside
//! messages, and [`watch`] tells a local actor when a remote one is gone
//! and why: stopped with the reason given to its `stop`, failed with its
//! handler's error or panic message, or its node left, was lost or
//! restarted, as a [`tether::WatchEvent`] or a [`RemoteSupervisionEvent`]
//! shaped like ractor's `SupervisionEvent`.
//!
//! ```text
//!  node A                                         node B
//!  RemoteActorRef: cast! / call! / send / ask      exported ActorRef<M>
//!    │ tether RemoteRef: serialize M, windows        ▲ ActorRef::cast(M), paced
//!    ▼                                               │
//!  connection (mux, TCP) ─────────────────────────▶ node: decode M, per-sender order
//! ```
//!
//! # Example
//!
//! A local ractor counter, made remote: the derives, the port attribute,
//! the nodes, the export and the lookup are all that changed.
//!
//! ```
//! use ractor::{call, call_t, cast, Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
//! use serde::{Deserialize, Serialize};
//! use tether::{Config, Node};
//!
//! #[derive(Serialize, Deserialize)]
//! enum CounterMsg {
//!     Add(u64),
//!     Get(#[serde(with = "tether_ractor::rpc_reply")] RpcReplyPort<u64>),
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
//! // From here on, ractor code as ever.
//! cast!(remote, CounterMsg::Add(2))?;
//! remote.send_message(CounterMsg::Add(3))?;
//! assert_eq!(call!(remote, CounterMsg::Get)?, 5);
//! assert_eq!(call_t!(remote, CounterMsg::Get, 5_000)?, 5);
//! # Ok(()) }
//! ```
//!
//! `cargo run --example ractor_counter` runs ractor's own counter example
//! this way.
//!
//! # What cannot work as with a local actor
//!
//! - A `RemoteActorRef` is not an `ActorRef`: ractor's `ActorRef` is a
//!   concrete type around a local mailbox, so code typed for `ActorRef<M>`
//!   gets the proxy of [`to_actor_ref`](RemoteActorRef::to_actor_ref), and
//!   what needs the actor's own cell (`stop`, `kill`, `link`, its status,
//!   ractor's registry and `pg` on this node) acts on the proxy, not on the
//!   remote actor. Use [`watch`] or [`monitor`](RemoteActorRef::monitor) to
//!   learn when the remote actor stops.
//! - An `RpcReplyPort` travels only in the request of `call` (`call!`,
//!   `call_t!`) on the `RemoteActorRef` itself: serde encodes by reference,
//!   so the port cannot be moved out of a message to travel, and only the
//!   caller's `call` can await the channel put in its place. In a `cast`,
//!   through the proxy or a [`RemoteGroup`], the message does not encode,
//!   is dropped, and says so (logged; a waiting caller gets
//!   `SenderError`). Use tether's [`ReplyPort`](tether::ReplyPort) in
//!   messages that travel other ways;
//!   [`rpc_reply::to_reply_port`] makes one from `call!`'s port.
//! - `forward!` (`ActorRef::call_and_forward`) has no remote form: it
//!   needs an `ActorRef`, and through the proxy its `RpcReplyPort` cannot
//!   travel. Await [`call`](RemoteActorRef::call) and cast the answer on.
//! - Messages are serde types; a field that is not serializable (a
//!   closure, a local `ActorRef`) cannot cross nodes. Send a
//!   [`RemoteActorRef`] instead of an `ActorRef`.
//!
//! # Errors
//!
//! ractor's own operations report in ractor's terms where the meaning
//! matches, and log what ractor's errors cannot say:
//!
//! | what happened | `cast`, `send_message`, `cast!` | `call`, `call!`, `call_t!` | tether's operations |
//! |---|---|---|---|
//! | the actor stopped, or its node cannot be reached | `SendErr(msg)` (ractor: "the actor has died") | `SendErr(msg)` | `TellError::Unreachable` |
//! | the node's outbox is full (`Config::max_outbox`; counted, logged) | `SendErr(msg)` (not admitted) | — (a call waits for room) | `TellError::Full` |
//! | too many calls wait on the node (`Config::max_pending_asks`) | — | `SendErr(msg)` | `CallError::Failed` |
//! | the message does not encode, or exceeds `max_message` | `InvalidActorType`, logged at warn with the codec's error | `InvalidActorType`, logged | `TellError::Send`, `CallError::Failed` |
//! | no answer within the timeout | — | `Ok(CallResult::Timeout)`; `call_t!`: `RactorErr::Timeout` | `CallError::Timeout` |
//! | the handler dropped the port unanswered | — | `Ok(CallResult::SenderError)`; `call!`: `Messaging(ChannelClosed)` | `CallError::NoReply` |
//! | the node was lost while the answer was awaited | — | `Ok(CallResult::SenderError)` | `CallError::Unreachable` |
//! | the answer does not decode | — | `Ok(CallResult::SenderError)`, logged | `CallError::Failed` |
//!
//! Why not otherwise: a stopped actor is `SendErr` with the message back,
//! as ractor reports a send to a dead local actor, not `ChannelClosed`,
//! which ractor uses for a closed receiving end (a dropped reply port). A
//! message that cannot be encoded is never reported as a gone actor
//! (`SendErr`) or a closed channel: it is `InvalidActorType`, as ractor's
//! own `cluster` feature reports a message it cannot serialize for a remote
//! actor, and the warn log names the codec's error. That error cannot carry
//! the message; [`post`](RemoteActorRef::post) and
//! [`send`](RemoteActorRef::send) hand it back.
//!
//! # Backpressure
//!
//! The sender's memory is bounded by the connection's windows and send
//! buffers, and by the node's outbox ([`Config::max_outbox`](tether::Config::max_outbox))
//! for what [`cast`](RemoteActorRef::cast) accepts without waiting;
//! [`send`](RemoteActorRef::send) waits for room instead, and
//! [`try_cast`](RemoteActorRef::try_cast) fails with `Full`. What happens on
//! the actor's node depends on how the actor was exported:
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
//! [`pg::group`] gives a [`RemoteGroup`] to `cast`, `send` or `ask` one
//! member (round robin, or by key) or `broadcast` to all. [`subscribe`]
//! delivers the cluster's membership events to an actor.
#![warn(unreachable_pub, missing_docs)]

mod cluster;
mod error;
mod exit;
mod export;
mod group;
mod pace;
pub mod pg;
mod proxy;
pub mod registry;
mod remote_ref;
pub mod rpc_reply;
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
