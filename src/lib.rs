//! tether
#![warn(unreachable_pub, missing_docs)]

mod chan;
pub mod codec;
mod config;
mod conn;
#[doc(hidden)]
pub mod fuzz;
mod mux;
pub mod transport;
mod wire;

pub use chan::{mpsc, oneshot, watch, RecvError};
pub use config::{Config, ConfigError};
pub use conn::{ConnectError, Connection, ConnectionError, ConnectionStats};
pub use mux::MuxError as ProtocolError;
pub use wire::WireError;

use std::sync::OnceLock;

/// A node's identity: a random uuid drawn once per process, so it changes
/// whenever the process restarts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct NodeId(pub uuid::Uuid);

impl std::fmt::Display for NodeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// This process's node id.
pub fn node_id() -> NodeId {
    static ID: OnceLock<NodeId> = OnceLock::new();
    *ID.get_or_init(|| NodeId(uuid::Uuid::new_v4()))
}
