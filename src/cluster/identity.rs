//! How a member is named in gossip: one incarnation of a node at one
//! address.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::NodeId;

/// Longest node name carried in gossip, in bytes: every gossip packet names
/// two members, so names are kept short.
pub const MAX_NAME: usize = 64;

/// A member as the gossip engine knows it: the node's id (new with each
/// process), the address its listener and its gossip socket share, when the
/// process started, and a counter bumped each time this process rejoins
/// after the cluster declared it down.
///
/// Two identities at one address are the same member; the newer one wins:
/// a later process (by start time, then by id), or within one process the
/// higher bump. Every member decides a conflict the same way, so the view
/// converges.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub(crate) struct Ident {
    pub(crate) node: NodeId,
    pub(crate) addr: SocketAddr,
    /// Milliseconds since the Unix epoch at which the node joined.
    pub(crate) started: u64,
    pub(crate) bump: u16,
    pub(crate) name: Option<String>,
    /// Set on the identity a node takes just before it leaves, so every
    /// member tells a graceful leave from a failure, in whatever order the
    /// gossip about it arrives.
    pub(crate) leaving: bool,
}

impl foca::Identity for Ident {
    type Addr = SocketAddr;

    /// Declared down while alive (a partition, a long pause): come back at
    /// once with a higher bump, which wins over the identity declared down.
    fn renew(&self) -> Option<Self> {
        Some(Ident { bump: self.bump.wrapping_add(1), ..self.clone() })
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn win_addr_conflict(&self, other: &Self) -> bool {
        if self.node == other.node {
            // u16 bumps wrap; a process rejoins far fewer than 32,768 times
            // between two gossip rounds.
            (self.bump.wrapping_sub(other.bump) as i16) > 0
        } else {
            (self.started, self.node) > (other.started, other.node)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use foca::Identity;

    fn ident(n: u128, started: u64, bump: u16) -> Ident {
        Ident {
            node: NodeId(uuid::Uuid::from_u128(n)),
            addr: "127.0.0.1:7000".parse().unwrap(),
            started,
            bump,
            name: None,
            leaving: false,
        }
    }

    #[test]
    fn the_newer_incarnation_wins_from_either_side() {
        let cases = [
            (ident(1, 10, 0), ident(2, 20, 0)),
            (ident(1, 10, 0), ident(2, 10, 0)),
            (ident(1, 10, 0), ident(1, 10, 1)),
            (ident(1, 10, u16::MAX), ident(1, 10, 0)),
        ];
        for (older, newer) in cases {
            assert!(newer.win_addr_conflict(&older), "{newer:?} must beat {older:?}");
            assert!(!older.win_addr_conflict(&newer), "{older:?} must lose to {newer:?}");
        }
        let renewed = ident(1, 10, 3).renew().unwrap();
        assert!(renewed.win_addr_conflict(&ident(1, 10, 3)));
    }
}
