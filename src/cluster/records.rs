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

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::auth::Token;
use crate::{ActorId, NodeId};

/// Longest name, group or scope, in bytes.
pub const MAX_KEY: usize = 255;
/// Longest message tag a pulled record may carry, in bytes.
const MAX_TAG: usize = 1024;

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
    /// The message tag the actor takes; for an export of an actor that
    /// takes several types (`Node::export_many`), their tags, one per line.
    pub(crate) tag: String,
    /// For a unique claim, when it was made: milliseconds since the Unix
    /// epoch by the claimant's clock. 0 otherwise.
    pub(crate) claimed: u64,
}

impl Record {
    /// Within the bounds every member checks a pulled set against.
    fn is_valid(&self) -> bool {
        self.key.is_valid() && self.tag.len() <= MAX_TAG
    }
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
    #[error("a name, group or scope longer than {MAX_KEY} bytes, or a tag longer than {MAX_TAG}")]
    TooLong,
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
    /// The newest version whose set this member refused (too many records,
    /// too long): not pulled again until a newer one is heard.
    refused: u64,
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

    /// The actors this member's own records name.
    pub(crate) fn own_actors(&self) -> Vec<u64> {
        self.own.keys().map(|(_, actor)| *actor).collect()
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

    /// Every holder of a name: the winning unique claim (a losing one is
    /// about to be withdrawn), then the exports.
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
        // What other members would refuse is not published.
        if !record.is_valid() {
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
            .map(|(name, actor, token, tag)| Record { key: Key::Name(name), actor, token, tag, claimed: 0 })
            .filter(Record::is_valid)
            .map(|r| ((r.key.clone(), r.actor), r))
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
        self.remotes.insert(node, Remote { epoch: self.epochs, set: None, heard: 0, refused: 0 });
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

    /// Members whose set is to be pulled (a newer version heard of than
    /// held: a member that never published is never asked, so a cluster
    /// without names or groups opens no connection for them), with the
    /// epoch to pull under and the version held (0 if none: sets count up
    /// from 0, one per change).
    pub(crate) fn wanted(&self) -> Vec<(NodeId, u64, u64)> {
        let held = |r: &Remote| r.set.as_ref().map_or(0, |s| s.version);
        let mut w: Vec<_> = self
            .remotes
            .iter()
            .filter(|(_, r)| held(r) < r.heard && r.refused < r.heard)
            .map(|(n, r)| (*n, r.epoch, held(r)))
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
        let refusal = if set.records.len() > self.max_records {
            Some(Refused::TooMany { count: set.records.len(), max: self.max_records })
        } else if set.records.iter().any(|r| !r.is_valid()) {
            Some(Refused::TooLong)
        } else {
            None
        };
        if let Some(refusal) = refusal {
            // Not asked for again until the member publishes anew.
            let remote = self.remotes.get_mut(&node).expect("checked above");
            remote.refused = remote.refused.max(set.version);
            return Err(refusal);
        }
        // A set that names a record twice holds it once.
        let new: BTreeSet<Record> = set.records.into_iter().collect();
        let remote = self.remotes.get_mut(&node).expect("checked above");
        remote.heard = remote.heard.max(set.version);
        let old = remote.set.replace(Snapshot { version: set.version, records: new.iter().cloned().collect() });
        let old: BTreeSet<Record> = old.map(|s| s.records.into_iter().collect()).unwrap_or_default();
        // Only what changed is unindexed and indexed again, so subscribers
        // hear of changes only.
        for r in old.difference(&new) {
            self.unindex(node, r);
        }
        for r in new.difference(&old) {
            self.index_record(node, r.clone());
        }
        self.settle_claims();
        Ok(())
    }

    /// `node`'s set pulled under `epoch` is still at `version` (the pull
    /// asked for changes since then). Records an empty set for a member
    /// never pulled (version 0: it never published). False if a newer
    /// version was heard meanwhile: the pull is to be made again later.
    pub(crate) fn unchanged(&mut self, node: NodeId, epoch: u64, version: u64) -> bool {
        let Some(remote) = self.remotes.get_mut(&node).filter(|r| r.epoch == epoch) else { return true };
        if remote.set.is_none() {
            remote.set = Some(Snapshot { version, records: Vec::new() });
        }
        remote.heard <= version
    }

    /// Own unique claims that lost to another member's are withdrawn, and
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

#[cfg(test)]
mod tests {
    use super::*;

    fn node(n: u8) -> NodeId {
        NodeId(uuid::Uuid::from_bytes([n; 16]))
    }

    fn rec(key: Key, actor: u64, claimed: u64) -> Record {
        Record { key, actor, token: [actor as u8; 16], tag: "Msg".into(), claimed }
    }

    fn name(n: &str) -> Key {
        Key::Name(n.into())
    }

    fn unique(n: &str) -> Key {
        Key::Unique(n.into())
    }

    fn drain(t: &mut Table) -> Vec<Change> {
        std::iter::from_fn(|| t.poll_change()).collect()
    }

    /// A table of node 1 that holds node 2 up, with `records` pulled.
    fn with_peer(records: Vec<Record>) -> Table {
        let mut t = Table::new(node(1), 100);
        t.member_up(node(2));
        t.heard(node(2), 1);
        let (_, epoch, since) = t.wanted()[0];
        assert_eq!(since, 0, "nothing held");
        t.apply(node(2), epoch, Snapshot { version: 1, records }).unwrap();
        t
    }

    #[test]
    fn a_pulled_set_replaces_the_held_one_and_only_changes_are_reported() {
        let mut t = with_peer(vec![rec(name("a"), 1, 0), rec(name("b"), 2, 0)]);
        assert_eq!(drain(&mut t).len(), 2);
        let (_, epoch, _) = (node(2), t.remotes[&node(2)].epoch, 0);
        t.apply(node(2), epoch, Snapshot { version: 2, records: vec![rec(name("b"), 2, 0), rec(name("c"), 3, 0)] })
            .unwrap();
        let changes = drain(&mut t);
        assert_eq!(changes.len(), 2, "{changes:?}");
        assert!(changes.contains(&Change { key: name("a"), actor: ActorId { node: node(2), id: 1 }, added: false }));
        assert!(changes.contains(&Change { key: name("c"), actor: ActorId { node: node(2), id: 3 }, added: true }));
        assert!(t.resolve("a").is_none());
        assert_eq!(t.resolve("c").unwrap().record.actor, 3);
    }

    #[test]
    fn stale_oversized_and_overlong_sets_are_refused_whole() {
        let mut t = with_peer(vec![rec(name("a"), 1, 0)]);
        let epoch = t.remotes[&node(2)].epoch;
        let stale = t.apply(node(2), epoch, Snapshot { version: 1, records: vec![] });
        assert_eq!(stale, Err(Refused::Stale { held: 1 }));
        let many: Vec<Record> = (0..101).map(|i| rec(name(&format!("n{i}")), i, 0)).collect();
        assert_eq!(
            t.apply(node(2), epoch, Snapshot { version: 5, records: many }),
            Err(Refused::TooMany { count: 101, max: 100 })
        );
        // Not asked for again until a newer version is heard.
        t.heard(node(2), 5);
        assert!(t.wanted().is_empty(), "a refused version is not pulled again");
        t.heard(node(2), 6);
        assert_eq!(t.wanted().len(), 1);
        let long = vec![rec(name(&"x".repeat(MAX_KEY + 1)), 1, 0)];
        assert_eq!(t.apply(node(2), epoch, Snapshot { version: 5, records: long }), Err(Refused::TooLong));
        let mut tagged = rec(name("t"), 1, 0);
        tagged.tag = "T".repeat(MAX_TAG + 1);
        assert_eq!(t.apply(node(2), epoch, Snapshot { version: 5, records: vec![tagged] }), Err(Refused::TooLong));
        // A pull from before the member went and came back is not taken.
        t.member_gone(node(2));
        t.member_up(node(2));
        let old = t.apply(node(2), epoch, Snapshot { version: 9, records: vec![rec(name("z"), 9, 0)] });
        assert_eq!(old, Err(Refused::NotUp));
        assert!(t.resolve("a").is_none() && t.resolve("z").is_none());
    }

    #[test]
    fn a_set_naming_a_record_twice_holds_it_once() {
        let mut t = with_peer(vec![rec(name("a"), 1, 0), rec(name("a"), 1, 0)]);
        assert_eq!(t.holders(&name("a")).len(), 1);
        assert_eq!(drain(&mut t).len(), 1);
    }

    #[test]
    fn the_earliest_claim_wins_and_the_later_own_claim_is_withdrawn() {
        let mut t = Table::new(node(1), 100);
        t.insert(rec(unique("leader"), 7, 2_000)).unwrap();
        let v = t.version();
        t.member_up(node(2));
        let epoch = t.remotes[&node(2)].epoch;
        t.apply(node(2), epoch, Snapshot { version: 1, records: vec![rec(unique("leader"), 1, 1_000)] }).unwrap();
        assert_eq!(t.poll_lost(), Some(("leader".into(), 7, ActorId { node: node(2), id: 1 })));
        assert!(t.version() > v, "the withdrawal is published");
        assert_eq!(t.resolve("leader").unwrap().actor(), ActorId { node: node(2), id: 1 });
        assert!(!t.snapshot().records.iter().any(|r| r.key == unique("leader")));
        // Now taken: a new claim here is refused at once.
        let taken = t.insert(rec(unique("leader"), 8, 3_000));
        assert_eq!(taken, Err(InsertError::Taken { name: "leader".into(), holder: ActorId { node: node(2), id: 1 } }));
    }

    #[test]
    fn an_earlier_own_claim_keeps_the_name() {
        let mut t = Table::new(node(1), 100);
        t.insert(rec(unique("leader"), 7, 1_000)).unwrap();
        t.member_up(node(2));
        let epoch = t.remotes[&node(2)].epoch;
        t.apply(node(2), epoch, Snapshot { version: 1, records: vec![rec(unique("leader"), 1, 2_000)] }).unwrap();
        assert_eq!(t.poll_lost(), None);
        assert_eq!(t.resolve("leader").unwrap().actor(), ActorId { node: node(1), id: 7 });
        // The winning claim only: the other is being withdrawn.
        let all: Vec<u64> = t.resolve_all("leader").iter().map(|h| h.record.actor).collect();
        assert_eq!(all, [7]);
    }

    #[test]
    fn a_member_is_pulled_only_once_it_published() {
        let mut t = Table::new(node(1), 100);
        t.member_up(node(2));
        assert!(t.wanted().is_empty(), "never published: nothing to pull, no connection needed");
        t.heard(node(2), 3);
        let (peer, epoch, since) = t.wanted()[0];
        assert_eq!((peer, since), (node(2), 0));
        // Answered "unchanged" although a newer version was heard: asked
        // again later (the change is on its way).
        assert!(!t.unchanged(node(2), epoch, 0));
        t.apply(node(2), epoch, Snapshot { version: 3, records: vec![] }).unwrap();
        assert!(t.wanted().is_empty());
        // Versions heard of members not up are not kept here (the engine
        // keeps them, and `sync::follow` passes them on when it comes up).
        t.heard(node(3), 5);
        t.member_up(node(3));
        assert!(t.wanted().is_empty());
    }

    #[test]
    fn own_records_are_bounded() {
        let mut t = Table::new(node(1), 2);
        t.insert(rec(name("a"), 1, 0)).unwrap();
        t.insert(rec(name("b"), 2, 0)).unwrap();
        assert_eq!(t.insert(rec(name("c"), 3, 0)), Err(InsertError::Full(2)));
        // Replacing one is not growing.
        t.insert(rec(name("a"), 1, 0)).unwrap();
    }
}
