//! The peer table: one live connection per peer node, and a bounded memory
//! of peers that went away and why.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use super::control::{Control, CLOSE_NODE_LEFT};
use super::error::RemoteError;
use crate::chan::mpsc;
use crate::{Connection, ConnectionError, NodeId, SessionLost};

/// How many departed peers a node remembers (why each went), so that refs
/// to them fail with `NodeLost`, `NodeLeft` or `NodeRestarted` rather than
/// `NoRoute`. Older ones are forgotten, with their addresses and names.
pub(crate) const DEPARTED_KEPT: usize = 1024;

/// Nodes whose ask limits are kept while nobody waits on them.
const ASKS_KEPT: usize = 64;

/// A connected peer.
#[derive(Clone)]
pub(crate) struct Peer {
    pub(crate) conn: Connection,
    pub(crate) control: mpsc::Sender<Control>,
}

/// Why a peer is no longer connected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fate {
    /// Its connection failed.
    Lost,
    /// It said goodbye: it shut down.
    Left,
    /// It came back with a new identity.
    Restarted,
}

impl Fate {
    /// How a connection's end says the peer went.
    pub(crate) fn of(conn: &Connection) -> Fate {
        match conn.error() {
            Some(ConnectionError::SessionLost(SessionLost::PeerRestarted)) => Fate::Restarted,
            Some(ConnectionError::PeerClosed { code: CLOSE_NODE_LEFT, .. }) => Fate::Left,
            _ => Fate::Lost,
        }
    }

    pub(crate) fn error(self, id: NodeId) -> RemoteError {
        match self {
            Fate::Lost => RemoteError::NodeLost(id),
            Fate::Left => RemoteError::NodeLeft(id),
            Fate::Restarted => RemoteError::NodeRestarted(id),
        }
    }
}

/// Peers, live and departed. Everything here is bounded by the live peers
/// plus [`DEPARTED_KEPT`].
#[derive(Default)]
pub(crate) struct PeerTable {
    live: HashMap<NodeId, Peer>,
    /// Departed peers, oldest first, at most `DEPARTED_KEPT`.
    departed: VecDeque<NodeId>,
    fates: HashMap<NodeId, Fate>,
    /// Which node answered at a dialed address, to recognise restarts.
    dialed: HashMap<String, NodeId>,
    /// Names peers gave in their hello, to recognise a restarted node that
    /// comes back at another address.
    named: HashMap<String, NodeId>,
    /// Permits for the asks waiting on each node
    /// (`Config::max_pending_asks` each).
    asks: HashMap<NodeId, Arc<tokio::sync::Semaphore>>,
}

impl PeerTable {
    /// The live peer `id`, if its connection has not ended.
    pub(crate) fn get(&self, id: NodeId) -> Option<&Peer> {
        self.live.get(&id).filter(|p| p.conn.error().is_none())
    }

    /// Whether `id`'s connection carries traffic now: live, with its
    /// transport up. A connection waiting to resume is not.
    pub(crate) fn is_up(&self, id: NodeId) -> bool {
        self.get(id).is_some_and(|p| p.conn.is_link_up())
    }

    /// Live peers.
    pub(crate) fn ids(&self) -> Vec<NodeId> {
        self.live.iter().filter(|(_, p)| p.conn.error().is_none()).map(|(id, _)| *id).collect()
    }

    /// Every live peer's connection.
    pub(crate) fn connections(&self) -> Vec<Connection> {
        self.live.values().map(|p| p.conn.clone()).collect()
    }

    /// Every live peer's connection, with the name the peer gave in its
    /// hello (if it has one and no later node took it): what the metrics
    /// read and label.
    #[cfg(feature = "metrics")]
    pub(crate) fn named_connections(&self) -> Vec<(NodeId, Option<String>, Connection)> {
        let names: HashMap<NodeId, &String> = self.named.iter().map(|(name, id)| (*id, name)).collect();
        let name = |id: &NodeId| names.get(id).map(|n| (*n).clone());
        self.live
            .iter()
            .filter(|(_, p)| p.conn.error().is_none())
            .map(|(id, p)| (*id, name(id), p.conn.clone()))
            .collect()
    }

    /// Makes `peer` the connection to `id`; returns the one it replaces.
    pub(crate) fn insert(&mut self, id: NodeId, peer: Peer) -> Option<Peer> {
        if self.fates.remove(&id).is_some() {
            self.departed.retain(|d| *d != id);
        }
        self.live.insert(id, peer)
    }

    /// `conn` to `id` ended: if it is the current one, `id` departs.
    pub(crate) fn remove(&mut self, id: NodeId, conn: &Connection) -> Option<Fate> {
        let same = self.live.get(&id).is_some_and(|p| Arc::ptr_eq(p.conn.shared(), conn.shared()));
        if !same {
            return None;
        }
        self.live.remove(&id);
        self.asks.remove(&id);
        let fate = Fate::of(conn);
        self.depart(id, fate);
        Some(fate)
    }

    /// Remembers why `id` went (a later, better-informed fate replaces an
    /// earlier one), forgetting the oldest beyond the bound.
    fn depart(&mut self, id: NodeId, fate: Fate) {
        if self.get(id).is_some() {
            return;
        }
        // Its connection ended, and the task serving it has not taken it out
        // yet: it goes now, with what is known of it.
        if self.live.remove(&id).is_some() {
            self.asks.remove(&id);
        }
        if self.fates.insert(id, fate).is_none() {
            self.departed.push_back(id);
        }
        while self.departed.len() > DEPARTED_KEPT {
            let Some(old) = self.departed.pop_front() else { break };
            self.fates.remove(&old);
            self.dialed.retain(|_, n| *n != old);
            self.named.retain(|_, n| *n != old);
        }
    }

    /// Why `id` went, if it did and is remembered: also when its
    /// connection has ended but the task serving it has not yet taken it
    /// out of the table.
    pub(crate) fn fate(&self, id: NodeId) -> Option<Fate> {
        match self.live.get(&id) {
            Some(p) if p.conn.error().is_some() => Some(Fate::of(&p.conn)),
            _ => self.fates.get(&id).copied(),
        }
    }

    /// The node answering at `addr`, if a live one does.
    pub(crate) fn live_at(&self, addr: &str) -> Option<NodeId> {
        let id = *self.dialed.get(addr)?;
        self.get(id).map(|_| id)
    }

    /// `id` answered at `addr`; another node answering there before means
    /// that one restarted.
    pub(crate) fn dialed(&mut self, addr: String, id: NodeId) {
        if let Some(old) = self.dialed.insert(addr, id) {
            if old != id && self.get(old).is_none() {
                tracing::info!(old = %old, new = %id, "node at this address restarted");
                self.depart(old, Fate::Restarted);
            }
        }
    }

    /// `id` says it is named `name`; a gone node of that name restarted.
    pub(crate) fn named(&mut self, name: String, id: NodeId) {
        if let Some(old) = self.named.insert(name, id) {
            // Two live nodes may share a name by mistake; only a gone one
            // can have restarted.
            if old != id && self.get(old).is_none() {
                tracing::info!(old = %old, new = %id, "named node restarted");
                self.depart(old, Fate::Restarted);
            }
        }
    }

    /// The ask permits of `id` (a live peer, or a node reached through
    /// one), made on first use. Entries nobody waits on are forgotten once
    /// there are more than [`ASKS_KEPT`], so the table holds at most the
    /// nodes with asks pending plus that many.
    pub(crate) fn asks(&mut self, id: NodeId, limit: usize) -> Arc<tokio::sync::Semaphore> {
        if self.asks.len() > ASKS_KEPT && !self.asks.contains_key(&id) {
            self.asks.retain(|_, s| s.available_permits() < limit);
        }
        self.asks.entry(id).or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(limit))).clone()
    }

    /// Live peers, and entries held in all of the table's maps.
    pub(crate) fn sizes(&self) -> (usize, usize) {
        let held = self.live.len() + self.fates.len() + self.dialed.len() + self.named.len() + self.asks.len();
        (self.ids().len(), held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn departed_peers_are_remembered_up_to_the_bound() {
        let mut t = PeerTable::default();
        let ids: Vec<NodeId> = (0..DEPARTED_KEPT + 10).map(|_| NodeId(uuid::Uuid::new_v4())).collect();
        for (i, id) in ids.iter().enumerate() {
            t.dialed(format!("10.0.0.1:{i}"), *id);
            t.named(format!("n{i}"), *id);
            t.depart(*id, Fate::Left);
        }
        assert_eq!(t.fates.len(), DEPARTED_KEPT);
        assert_eq!(t.departed.len(), DEPARTED_KEPT);
        assert_eq!(t.dialed.len(), DEPARTED_KEPT, "addresses of forgotten nodes are forgotten too");
        assert_eq!(t.named.len(), DEPARTED_KEPT);
        assert_eq!(t.fate(ids[0]), None, "the oldest is forgotten");
        assert_eq!(t.fate(*ids.last().unwrap()), Some(Fate::Left));
    }
}
