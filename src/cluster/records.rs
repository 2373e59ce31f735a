//! The replicated registry, without I/O: names and group memberships of
//! actors, across the cluster.
//!
//! Each member owns the records of its own actors and numbers their versions:
//! every change bumps its version. The version travels in gossip (a custom
//! broadcast of the membership engine, see `engine.rs`); a member that hears
//! a newer version than it holds pulls the owner's whole set over their
//! connection (`sync.rs`). A member pulls too when another comes up, and
//! drops everything of one that goes down, leaves or restarts, before the
//! event is published. So every live member converges on the same records,
//! each set as its owner last published it, and no record outlives the
//! membership of its owner.
//!
//! Unique names are claimed by one actor cluster-wide. Two members that claim
//! one at the same time (or on both sides of a partition) both publish their
//! claim; every member that holds both ranks them the same way, the earliest
//! claim first (by the claimant's clock, then by node id), so lookups agree
//! on the holder, and the loser withdraws its claim and is told.

use std::collections::{BTreeMap, HashMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::auth::Token;
use crate::{ActorId, NodeId};

/// Longest name, group or scope, in bytes.
pub const MAX_KEY: usize = 255;

/// The version a member holds of a set it never pulled, for a pull's
/// "unless still at": no set is at this version (they count up from 0 by
/// one per change), so the owner sends its set whatever its version. Not 0:
/// a member that never changed anything is at 0, would answer "unchanged",
/// and would be asked again at once, forever.
pub(crate) const NOTHING_HELD: u64 = u64::MAX;

/// What a record says of its actor.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub(crate) enum Key {
    /// Exported under this name on its node (`Node::export`): several
    /// members may hold one.
    Name(String),
    /// Claimed cluster-wide (`Cluster::register`): one holder wins.
    Unique(String),
    /// A member of a process group.
    Group { scope: String, group: String },
}

impl Key {
    fn is_valid(&self) -> bool {
        match self {
            Key::Name(n) | Key::Unique(n) => n.len() <= MAX_KEY,
            Key::Group { scope, group } => scope.len() <= MAX_KEY && group.len() <= MAX_KEY,
        }
    }

    /// The name, for the keys that are names.
    pub(crate) fn name(&self) -> Option<&str> {
        match self {
            Key::Name(n) | Key::Unique(n) => Some(n),
            Key::Group { .. } => None,
        }
    }
}

/// One record of a member's set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Record {
    pub(crate) key: Key,
    /// The actor's id on its node (the node is the set's owner).
    pub(crate) actor: u64,
    /// The capability to reach it: the registry is shared with members only.
    pub(crate) token: Token,
    /// The message tag the actor takes.
    pub(crate) tag: String,
    /// For a unique claim, when it was made: milliseconds since the Unix
    /// epoch by the claimant's clock. 0 otherwise.
    pub(crate) claimed: u64,
}

/// A member's whole set, as pulled.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Snapshot {
    pub(crate) version: u64,
    pub(crate) records: Vec<Record>,
}

/// A record as the table holds it: with its owner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Held {
    pub(crate) node: NodeId,
    pub(crate) record: Record,
}

impl Held {
    pub(crate) fn actor(&self) -> ActorId {
        ActorId { node: self.node, id: self.record.actor }
    }

    /// The order in which unique claims win: earliest first.
    fn rank(&self) -> (u64, NodeId) {
        (self.record.claimed, self.node)
    }
}

/// A record arrived or went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Change {
    pub(crate) key: Key,
    pub(crate) actor: ActorId,
    pub(crate) added: bool,
}

/// Why a pulled set was not taken.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refused {
    #[error("the member is not up (any more)")]
    NotUp,
    #[error("not newer than the set held (version {held})")]
    Stale { held: u64 },
    #[error("{count} records, more than the {max} allowed per member")]
    TooMany { count: usize, max: usize },
    #[error("a name, group or scope longer than {MAX_KEY} bytes")]
    KeyTooLong,
}

/// What is known of another member.
#[derive(Default)]
struct Remote {
    /// The epoch of its coming up: a pull started before it went down and
    /// came back is not applied.
    epoch: u64,
    /// The set pulled last, if any.
    set: Option<Snapshot>,
    /// The newest version gossip told of.
    heard: u64,
}

/// The registry as this member sees it.
pub(crate) struct Table {
    me: NodeId,
    version: u64,
    own: BTreeMap<(Key, u64), Record>,
    remotes: HashMap<NodeId, Remote>,
    epochs: u64,
    /// Who holds each key, every member's records (own included).
    index: HashMap<Key, Vec<Held>>,
    max_records: usize,
    changes: VecDeque<Change>,
    /// Own unique claims another won: the name, this node's actor, the winner.
    lost: VecDeque<(String, u64, ActorId)>,
    /// Bumped on every change of the index.
    generation: u64,
}

impl Table {
    /// The table of member `me`, taking at most `max_records` records per
    /// member (its own included).
    pub(crate) fn new(me: NodeId, max_records: usize) -> Table {
        Table {
            me,
            version: 0,
            own: BTreeMap::new(),
            remotes: HashMap::new(),
            epochs: 0,
            index: HashMap::new(),
            max_records,
            changes: VecDeque::new(),
            lost: VecDeque::new(),
            generation: 0,
        }
    }

    pub(crate) fn me(&self) -> NodeId {
        self.me
    }

    pub(crate) fn version(&self) -> u64 {
        self.version
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    /// This member's own set, as peers pull it.
    pub(crate) fn snapshot(&self) -> Snapshot {
        Snapshot { version: self.version, records: self.own.values().cloned().collect() }
    }

    /// Every record held, own included, with its owner, sorted (a record
    /// held twice shows twice).
    #[cfg(test)]
    pub(crate) fn view(&self) -> Vec<(NodeId, Record)> {
        let mut all: Vec<_> = self.index.values().flatten().map(|h| (h.node, h.record.clone())).collect();
        all.sort();
        all
    }

    /// Holders of `key`, every member's.
    pub(crate) fn holders(&self, key: &Key) -> &[Held] {
        self.index.get(key).map_or(&[], Vec::as_slice)
    }

    /// The holder of a name: the winning unique claim if there is one, else
    /// this node's export, else the export on the smallest node id (so
    /// every member answers alike).
    pub(crate) fn resolve(&self, name: &str) -> Option<&Held> {
        let unique = self.holders(&Key::Unique(name.to_owned())).iter().min_by_key(|h| h.rank());
        unique.or_else(|| {
            let named = self.holders(&Key::Name(name.to_owned()));
            named.iter().find(|h| h.node == self.me).or_else(|| named.iter().min_by_key(|h| (h.node, h.record.actor)))
        })
    }

    /// Every holder of a name: unique claims (the winner first) and exports.
    pub(crate) fn resolve_all(&self, name: &str) -> Vec<&Held> {
        let mut unique: Vec<&Held> = self.holders(&Key::Unique(name.to_owned())).iter().collect();
        unique.sort_by_key(|h| h.rank());
        let mut named: Vec<&Held> = self.holders(&Key::Name(name.to_owned())).iter().collect();
        named.sort_by_key(|h| (h.node, h.record.actor));
        unique.truncate(1);
        unique.extend(named);
        unique
    }

    /// Adds an own record (replacing one with the same key and actor).
    /// Fails if this node holds `max_records` already, or a unique claim is
    /// held by another member.
    pub(crate) fn insert(&mut self, record: Record) -> Result<(), InsertError> {
        if !record.key.is_valid() {
            return Err(InsertError::KeyTooLong);
        }
        if let Key::Unique(name) = &record.key {
            let theirs = self.holders(&record.key).iter().find(|h| h.node != self.me || h.record.actor != record.actor);
            if let Some(h) = theirs {
                return Err(InsertError::Taken { name: name.clone(), holder: h.actor() });
            }
        }
        let at = (record.key.clone(), record.actor);
        if !self.own.contains_key(&at) && self.own.len() >= self.max_records {
            return Err(InsertError::Full(self.max_records));
        }
        if self.own.get(&at) == Some(&record) {
            return Ok(());
        }
        if let Some(old) = self.own.insert(at, record.clone()) {
            self.unindex(self.me, &old);
        }
        self.index_record(self.me, record);
        self.version += 1;
        Ok(())
    }

    /// Removes own records that `drop` picks; true if any.
    pub(crate) fn remove_own(&mut self, mut drop: impl FnMut(&Record) -> bool) -> bool {
        let gone: Vec<(Key, u64)> = self.own.iter().filter(|(_, r)| drop(r)).map(|(k, _)| k.clone()).collect();
        for at in &gone {
            if let Some(old) = self.own.remove(at) {
                self.unindex(self.me, &old);
            }
        }
        if !gone.is_empty() {
            self.version += 1;
        }
        !gone.is_empty()
    }

    /// Own records with a `Key::Name` become exactly `names` (name, actor,
    /// tag); true if that changed anything.
    pub(crate) fn set_exported(&mut self, names: Vec<(String, u64, Token, String)>) -> bool {
        let wanted: HashMap<(Key, u64), Record> = names
            .into_iter()
            .filter(|(name, ..)| name.len() <= MAX_KEY)
            .map(|(name, actor, token, tag)| {
                let key = Key::Name(name);
                ((key.clone(), actor), Record { key, actor, token, tag, claimed: 0 })
            })
            .collect();
        let removed = self.remove_own(|r| {
            matches!(r.key, Key::Name(_)) && wanted.get(&(r.key.clone(), r.actor)).is_none_or(|w| w != r)
        });
        let mut added = false;
        for (at, record) in wanted {
            if !self.own.contains_key(&at) {
                added |= self.insert(record).is_ok();
            }
        }
        removed || added
    }

    /// The member `node` is up (joined, came back, or took an address
    /// over); its set must be pulled.
    pub(crate) fn member_up(&mut self, node: NodeId) {
        if node == self.me {
            return;
        }
        self.member_gone(node);
        self.epochs += 1;
        self.remotes.insert(node, Remote { epoch: self.epochs, set: None, heard: 0 });
    }

    /// The member `node` is down, left or restarted: its records go.
    pub(crate) fn member_gone(&mut self, node: NodeId) {
        if let Some(Remote { set: Some(set), .. }) = self.remotes.remove(&node) {
            for r in &set.records {
                self.unindex(node, r);
            }
        }
    }

    pub(crate) fn is_up(&self, node: NodeId) -> bool {
        node == self.me || self.remotes.contains_key(&node)
    }

    /// Gossip told of `node`'s set at `version`.
    pub(crate) fn heard(&mut self, node: NodeId, version: u64) {
        if let Some(r) = self.remotes.get_mut(&node) {
            r.heard = r.heard.max(version);
        }
    }

    /// Members whose set is to be pulled (never pulled, or a newer version
    /// heard of), with the epoch to pull under and the version held
    /// ([`NOTHING_HELD`] if none).
    pub(crate) fn wanted(&self) -> Vec<(NodeId, u64, u64)> {
        let mut w: Vec<_> = self
            .remotes
            .iter()
            .filter(|(_, r)| r.set.as_ref().is_none_or(|s| s.version < r.heard))
            .map(|(n, r)| (*n, r.epoch, r.set.as_ref().map_or(NOTHING_HELD, |s| s.version)))
            .collect();
        w.sort_unstable();
        w
    }

    /// The set pulled from `node` under `epoch`.
    pub(crate) fn apply(&mut self, node: NodeId, epoch: u64, set: Snapshot) -> Result<(), Refused> {
        let remote = self.remotes.get(&node).filter(|r| r.epoch == epoch).ok_or(Refused::NotUp)?;
        if let Some(held) = &remote.set {
            if set.version <= held.version {
                return Err(Refused::Stale { held: held.version });
            }
        }
        if set.records.len() > self.max_records {
            return Err(Refused::TooMany { count: set.records.len(), max: self.max_records });
        }
        if set.records.iter().any(|r| !r.key.is_valid()) {
            return Err(Refused::KeyTooLong);
        }
        let remote = self.remotes.get_mut(&node).expect("checked above");
        remote.heard = remote.heard.max(set.version);
        let old = remote.set.replace(set.clone()).unwrap_or_default();
        // Only what changed is unindexed and indexed again, so subscribers
        // hear of changes only.
        for r in old.records.iter().filter(|r| !set.records.contains(r)) {
            self.unindex(node, r);
        }
        for r in set.records.into_iter().filter(|r| !old.records.contains(r)) {
            self.index_record(node, r);
        }
        self.settle_claims();
        Ok(())
    }

    /// Own unique claims that lost to another member's withdraw, and are
    /// reported (`poll_lost`).
    fn settle_claims(&mut self) {
        let mine: Vec<(Key, u64)> = self.own.keys().filter(|(k, _)| matches!(k, Key::Unique(_))).cloned().collect();
        for (key, actor) in mine {
            let holders = self.holders(&key);
            let Some(me) = holders.iter().find(|h| h.node == self.me && h.record.actor == actor) else { continue };
            let Some(winner) = holders.iter().filter(|h| h.rank() < me.rank()).min_by_key(|h| h.rank()) else {
                continue;
            };
            let (winner, name) = (winner.actor(), key.name().unwrap_or_default().to_owned());
            self.remove_own(|r| r.key == key && r.actor == actor);
            self.lost.push_back((name, actor, winner));
        }
    }

    pub(crate) fn poll_change(&mut self) -> Option<Change> {
        self.changes.pop_front()
    }

    pub(crate) fn poll_lost(&mut self) -> Option<(String, u64, ActorId)> {
        self.lost.pop_front()
    }

    fn index_record(&mut self, node: NodeId, record: Record) {
        let change = Change { key: record.key.clone(), actor: ActorId { node, id: record.actor }, added: true };
        self.index.entry(record.key.clone()).or_default().push(Held { node, record });
        self.changed(change);
    }

    fn unindex(&mut self, node: NodeId, record: &Record) {
        let Some(holders) = self.index.get_mut(&record.key) else { return };
        let Some(i) = holders.iter().position(|h| h.node == node && h.record == *record) else { return };
        holders.swap_remove(i);
        if holders.is_empty() {
            self.index.remove(&record.key);
        }
        let change = Change { key: record.key.clone(), actor: ActorId { node, id: record.actor }, added: false };
        self.changed(change);
    }

    fn changed(&mut self, change: Change) {
        self.generation += 1;
        // Bounded: the driver of the table drains it after every call.
        self.changes.push_back(change);
    }
}

/// Why an own record was not added.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum InsertError {
    /// Another actor holds the unique name.
    Taken {
        name: String,
        holder: ActorId,
    },
    /// This node holds the most records it may.
    Full(usize),
    KeyTooLong,
}

impl PartialOrd for Record {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Record {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (&self.key, self.actor, &self.tag, self.claimed, self.token).cmp(&(
            &other.key,
            other.actor,
            &other.tag,
            other.claimed,
            other.token,
        ))
    }
}
