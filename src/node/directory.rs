//! Finding nodes this node is not connected to, and connecting on demand.
//!
//! The node layer knows peers by connection only; the layer above (a
//! cluster) knows where every member listens. It lends that knowledge as a
//! [`Directory`], and the node dials a member the first time something needs
//! it: a lookup, opening a route to one of its actors, watching one.
//! Connections made so reconnect and resume as `Config::reconnect` says
//! (on by default), like any the node dials.

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

/// Dials made on demand, one per address: callers that need the same
/// member at once share one dial, and those waiting behind a dial that
/// failed less than [`FAILURE_KEPT`] ago get its error instead of each
/// waiting for a dial of their own. An entry lives while someone holds it
/// (a guard removes it, also when its caller is cancelled).
#[derive(Default)]
pub(crate) struct Dialing(Mutex<HashMap<SocketAddr, Arc<tokio::sync::Mutex<Outcome>>>>);

/// How the last dial to an address ended.
#[derive(Default)]
struct Outcome(Option<(tokio::time::Instant, RemoteError)>);

/// How long a failed dial's error answers later callers.
const FAILURE_KEPT: std::time::Duration = std::time::Duration::from_secs(1);

/// A caller's hold on an address's entry; the last one out removes it.
struct Slot<'a> {
    dialing: &'a Dialing,
    addr: SocketAddr,
    entry: Arc<tokio::sync::Mutex<Outcome>>,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut map = self.dialing.0.lock().unwrap_or_else(|e| e.into_inner());
        // The map's reference and ours: nobody else waits.
        if map.get(&self.addr).is_some_and(|e| Arc::ptr_eq(e, &self.entry)) && Arc::strong_count(&self.entry) == 2 {
            map.remove(&self.addr);
        }
    }
}

impl Dialing {
    fn slot(&self, addr: SocketAddr) -> Slot<'_> {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let entry = map.entry(addr).or_default().clone();
        Slot { dialing: self, addr, entry }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

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
        let slot = self.dialing.slot(addr);
        let mut outcome = slot.entry.lock().await;
        if let Ok(peer) = self.peer(node) {
            return Ok(peer);
        }
        if let Some((at, error)) = &outcome.0 {
            if at.elapsed() < FAILURE_KEPT {
                return Err(error.clone());
            }
        }
        let result = self.dial_member(node, addr, dial).await;
        outcome.0 = result.as_ref().err().map(|e| (tokio::time::Instant::now(), e.clone()));
        result
    }

    async fn dial_member(self: &Arc<Self>, node: NodeId, addr: SocketAddr, dial: Dialer) -> Result<Peer, RemoteError> {
        match self.connect_dialer(addr.to_string(), dial, self.cfg.clone(), Some(node)).await {
            Ok(id) if id == node => self.peer(node),
            Ok(other) => {
                tracing::info!(%node, %other, %addr, "member restarted before this node connected");
                Err(RemoteError::NodeRestarted(node))
            }
            Err(e) => {
                tracing::info!(%node, %addr, error = %e, "connecting to member failed");
                Err(RemoteError::ConnectFailed { node, why: e.to_string() })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An entry lives exactly while someone holds it: a caller dropped
    /// mid-dial (cancelled) leaves nothing behind.
    #[test]
    fn a_dial_entry_goes_with_its_last_caller() {
        let dialing = Dialing::default();
        let addr: SocketAddr = "127.0.0.1:7000".parse().unwrap();
        let first = dialing.slot(addr);
        let second = dialing.slot(addr);
        assert!(Arc::ptr_eq(&first.entry, &second.entry), "callers share one dial");
        drop(first);
        assert_eq!(dialing.len(), 1);
        drop(second);
        assert_eq!(dialing.len(), 0);
    }
}
