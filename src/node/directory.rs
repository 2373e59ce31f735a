//! Finding nodes this node is not connected to, and connecting on demand.
//!
//! The node layer knows peers by connection only; the layer above (a
//! cluster) knows where every member listens. It lends that knowledge as a
//! [`Directory`], and the node dials a member the first time something needs
//! it: a lookup, opening a route to one of its actors, watching one.
//! Connections made so reconnect and resume by default.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use super::error::RemoteError;
use super::inner::NodeInner;
use super::peers::Peer;
use crate::conn::Dialer;
use crate::NodeId;

/// Where a node is found: the address of a node this node may connect to,
/// and how to dial it (TCP, TLS).
pub(crate) trait Directory: Send + Sync {
    fn dialer(&self, node: NodeId) -> Option<(SocketAddr, Dialer)>;
}

/// One lock per address being dialed on demand, so many routes opened at
/// once to one member make one connection. Entries go when their dial ends.
#[derive(Default)]
pub(crate) struct Dialing(Mutex<HashMap<SocketAddr, Arc<tokio::sync::Mutex<()>>>>);

impl NodeInner {
    /// Joins the directory in; false if the node already has one.
    pub(crate) fn set_directory(&self, directory: Arc<dyn Directory>) -> bool {
        self.directory.set(directory).is_ok()
    }

    /// The connection to `node`: the live one, else one made now to where
    /// the directory says it is. Without either, why it cannot be reached.
    pub(crate) async fn reach(self: &Arc<Self>, node: NodeId) -> Result<Peer, RemoteError> {
        if let Ok(peer) = self.peer(node) {
            return Ok(peer);
        }
        let Some((addr, dial)) = self.directory.get().and_then(|d| d.dialer(node)) else {
            return self.peer(node);
        };
        let lock = {
            let mut dialing = self.dialing.0.lock().unwrap_or_else(|e| e.into_inner());
            dialing.entry(addr).or_default().clone()
        };
        let result = {
            let _one_at_a_time = lock.lock().await;
            match self.peer(node) {
                Ok(peer) => Ok(peer),
                Err(_) => self.dial_member(node, addr, dial).await,
            }
        };
        let mut dialing = self.dialing.0.lock().unwrap_or_else(|e| e.into_inner());
        if dialing.get(&addr).is_some_and(|l| Arc::strong_count(l) == 1) {
            dialing.remove(&addr);
        }
        result
    }

    async fn dial_member(self: &Arc<Self>, node: NodeId, addr: SocketAddr, dial: Dialer) -> Result<Peer, RemoteError> {
        let mut cfg = self.cfg.clone();
        cfg.reconnect.enabled = true;
        match self.connect_dialer(addr.to_string(), dial, cfg).await {
            Ok(id) if id == node => self.peer(node),
            Ok(other) => {
                tracing::info!(%node, %other, %addr, "member restarted before this node connected");
                Err(RemoteError::NodeRestarted(node))
            }
            Err(e) => {
                tracing::debug!(%node, %addr, error = %e, "connecting to member failed");
                match self.why_unreachable(node) {
                    RemoteError::NoRoute(_) => Err(RemoteError::NodeLost(node)),
                    other => Err(other),
                }
            }
        }
    }
}
