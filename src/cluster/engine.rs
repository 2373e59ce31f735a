//! The membership engine without I/O: foca (SWIM) behind tether's
//! envelope, and the view that turns foca's notifications into the events
//! users see. The driver feeds it datagrams and timers and carries out what
//! it asks (`poll_transmit`, `poll_timer`); tests drive it with a virtual
//! network and clock.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::num::{NonZeroU8, NonZeroUsize};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use foca::{BroadcastHandler, Codec, Foca, Invalidates, Notification, OwnedNotification, PostcardCodec};
use rand::rngs::SmallRng;
use rand::SeedableRng;

use super::envelope::{Envelope, Rejected, OVERHEAD};
use super::identity::{Ident, MAX_NAME};
use super::{ClusterConfig, ClusterEvent, DownReason, Member, MemberStatus};
use crate::auth::Cookie;
use crate::NodeId;

/// Largest engine payload in a datagram; with the envelope a datagram stays
/// below 1,472 bytes, what fits one Ethernet frame after IP and UDP headers.
pub(crate) const MAX_PAYLOAD: usize = 1400;
/// Largest datagram accepted.
pub(crate) const MAX_DATAGRAM: usize = MAX_PAYLOAD + OVERHEAD;
/// More members than one payload can name (a member takes at least 25
/// bytes), so a node tracking this many fewer than its bound can take any
/// datagram without checking it.
const MAX_NEW_PER_DATAGRAM: usize = 64;
/// A member that has just joined (or rejoined) asks a random member for a
/// sample of the members it knows this often ...
const JOINING_ANNOUNCE: Duration = Duration::from_secs(1);
/// ... this many times, then as often as at rest ([`RESTING_ANNOUNCE`]):
/// what a burst of joins leaves out of the gossip, it learns within
/// seconds, and at rest this costs nothing more.
const JOINING_ANNOUNCES: u32 = 10;
/// How often a member at rest asks one for a sample of the members it
/// knows: the anti-entropy that broadcasts alone lack.
const RESTING_ANNOUNCE: Duration = Duration::from_secs(15);

type Swim = Foca<Ident, PostcardCodec, SmallRng, Versions>;

/// The one kind of custom broadcast: a member's registry version (see
/// `records.rs`), as its node id (16 bytes) and the version (u64, big
/// endian).
const VERSION_ITEM: usize = 24;

/// The newest registry version heard of each member, shared by every foca
/// instance the engine makes.
#[derive(Default)]
struct Book {
    seen: HashMap<NodeId, u64>,
    /// Versions newer than seen before, not yet polled.
    fresh: Vec<(NodeId, u64)>,
    /// Most members whose version is kept.
    cap: usize,
}

/// foca's handler of custom broadcasts: passes a version on while it is new.
struct Versions(Arc<Mutex<Book>>);

/// Which version item a broadcast is: a newer version of a member's
/// replaces its older one still being disseminated.
struct VersionKey {
    node: NodeId,
    version: u64,
}

impl Invalidates for VersionKey {
    fn invalidates(&self, other: &Self) -> bool {
        self.node == other.node && self.version >= other.version
    }
}

#[derive(Debug, thiserror::Error)]
#[error("a registry version item of {0} bytes, not {VERSION_ITEM}")]
struct BadItem(usize);

impl BroadcastHandler<Ident> for Versions {
    type Key = VersionKey;
    type Error = BadItem;

    fn receive_item(&mut self, data: &[u8], sender: Option<&Ident>) -> Result<Option<VersionKey>, BadItem> {
        let item: &[u8; VERSION_ITEM] = data.try_into().map_err(|_| BadItem(data.len()))?;
        let node = NodeId(uuid::Uuid::from_bytes(item[..16].try_into().expect("16 bytes")));
        let version = u64::from_be_bytes(item[16..].try_into().expect("8 bytes"));
        let key = VersionKey { node, version };
        if sender.is_none() {
            // This node's own, added by `publish_version`.
            return Ok(Some(key));
        }
        let mut book = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let known = book.seen.get(&node).copied();
        if known.is_some_and(|v| v >= version) {
            return Ok(None);
        }
        if known.is_none() && book.seen.len() >= book.cap {
            // Full (members down for long are kept until then): one entry
            // makes room. Losing a live member's version costs at most a
            // late pull, should it go down and come back; its own periodic
            // republishing gives the version again anyway.
            let evict = book.seen.keys().next().copied();
            if let Some(evict) = evict {
                book.seen.remove(&evict);
            }
        }
        book.seen.insert(node, version);
        book.fresh.push((node, version));
        Ok(Some(key))
    }
}

fn version_item(node: NodeId, version: u64) -> [u8; VERSION_ITEM] {
    let mut item = [0; VERSION_ITEM];
    item[..16].copy_from_slice(node.0.as_bytes());
    item[16..].copy_from_slice(&version.to_be_bytes());
    item
}

/// A timer foca asked for, tagged with the foca instance that asked: when it
/// comes back after that instance was replaced ([`Engine::start_afresh`]),
/// it is dropped (a fresh foca reuses timer tokens, and would run its
/// rounds twice).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Timer {
    instance: u64,
    timer: foca::Timer<Ident>,
}

/// Counters of the gossip a node sent and received.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct GossipStats {
    /// Datagrams sent.
    pub sent: u64,
    /// Bytes sent (whole datagrams).
    pub sent_bytes: u64,
    /// Datagrams received with a valid tag (foca may still find one
    /// malformed: it then counts in `rejected` too).
    pub received: u64,
    /// Bytes received (whole datagrams, accepted or not).
    pub received_bytes: u64,
    /// Datagrams dropped: not gossip, another version, a bad tag (a sender
    /// without the cookie), undecodable, or naming a name too long or a
    /// sender this node has no room for.
    pub rejected: u64,
    /// Updates about members this node did not track, left out of the
    /// datagrams that carried them because it tracks `max_members` already.
    pub ignored_updates: u64,
}

/// What foca asks of its runtime, gathered during one call.
#[derive(Default)]
struct Outbox {
    sends: VecDeque<(SocketAddr, Vec<u8>)>,
    timers: VecDeque<(Duration, foca::Timer<Ident>)>,
    notes: VecDeque<OwnedNotification<Ident>>,
}

impl foca::Runtime<Ident> for Outbox {
    fn notify(&mut self, notification: Notification<'_, Ident>) {
        self.notes.push_back(notification.to_owned());
    }

    fn send_to(&mut self, to: Ident, data: &[u8]) {
        self.sends.push_back((to.addr, data.to_vec()));
    }

    fn submit_after(&mut self, event: foca::Timer<Ident>, after: Duration) {
        self.timers.push_back((after, event));
    }
}

pub(crate) struct Engine {
    swim: Swim,
    /// foca's settings and the seed of its randomness, to start it afresh.
    config: foca::Config,
    seed: u64,
    /// foca instances replaced so far ([`Engine::start_afresh`]).
    instance: u64,
    /// Announces left at the joining pace ([`JOINING_ANNOUNCE`]).
    joining_announces: u32,
    envelope: Envelope,
    out: Outbox,
    view: View,
    events: VecDeque<ClusterEvent>,
    stats: GossipStats,
    left: bool,
    /// Most members foca may track, down ones included.
    max_members: usize,
    /// Registry versions heard, shared with foca's broadcast handler.
    versions: Arc<Mutex<Book>>,
    /// This node's registry version, published again after a fresh start.
    my_version: u64,
}

impl Engine {
    /// An engine for the member `me`, gossiping under `cookie`'s key;
    /// `seed` seeds its randomness (tests pass a fixed one).
    pub(crate) fn new(me: Ident, cfg: &ClusterConfig, cookie: Option<&Cookie>, seed: u64) -> Engine {
        let config = foca::Config {
            probe_period: cfg.probe_period,
            probe_rtt: cfg.probe_rtt,
            num_indirect_probes: NonZeroUsize::new(3).expect("3 > 0"),
            // Each update rides on this many messages. With 8, after 64
            // nodes joined at once, a member often stayed unaware of another
            // until the periodic announce (W7-converge-64: 6 runs in 15 took
            // 7-25 s); with 12, 1 in 16. Free at rest: nothing to carry.
            max_transmissions: NonZeroU8::new(12).expect("12 > 0"),
            suspect_to_down_after: cfg.suspect_timeout,
            // Down members are probed (announced to) again for this long, so
            // a partition that heals within it merges by itself; seeds
            // merge longer ones.
            remove_down_after: Some(Duration::from_secs(120)),
            max_packet_size: NonZeroUsize::new(MAX_PAYLOAD).expect("MAX_PAYLOAD > 0"),
            notify_down_members: true,
            periodic_announce: Some(foca::PeriodicParams {
                frequency: RESTING_ANNOUNCE,
                num_members: NonZeroUsize::new(1).expect("1 > 0"),
            }),
            periodic_announce_to_down_members: Some(foca::PeriodicParams {
                frequency: Duration::from_secs(2),
                num_members: NonZeroUsize::new(2).expect("2 > 0"),
            }),
            // Sent only while there is news.
            periodic_gossip: Some(foca::PeriodicParams {
                frequency: cfg.gossip_interval,
                num_members: NonZeroUsize::new(3).expect("3 > 0"),
            }),
        };
        let versions = Arc::new(Mutex::new(Book { cap: cfg.max_members.saturating_mul(2), ..Book::default() }));
        let handler = Versions(versions.clone());
        Engine {
            view: View::new(cfg.max_members),
            swim: Foca::with_custom_broadcast(
                me,
                joining(&config),
                SmallRng::seed_from_u64(seed),
                PostcardCodec,
                handler,
            ),
            versions,
            my_version: 0,
            joining_announces: JOINING_ANNOUNCES,
            config,
            seed,
            instance: 0,
            envelope: Envelope::new(cookie),
            out: Outbox::default(),
            events: VecDeque::new(),
            stats: GossipStats::default(),
            left: false,
            max_members: cfg.max_members,
        }
    }

    /// Asks the member at `addr` to let this node in (a seed); it answers
    /// with the members it knows.
    pub(crate) fn announce(&mut self, addr: SocketAddr) {
        if addr == self.swim.identity().addr || self.left {
            return;
        }
        // Only the address of an announce's destination is checked.
        let seed = Ident { node: NodeId(uuid::Uuid::nil()), addr, started: 0, bump: 0, name: None, leaving: false };
        let result = self.swim.announce(seed, &mut self.out);
        self.settle(result);
    }

    /// Whether `addr` is an active member (seeds that are need no announce).
    pub(crate) fn is_active(&self, addr: SocketAddr) -> bool {
        self.swim.iter_members().any(|m| m.id().addr == addr)
    }

    pub(crate) fn handle_datagram(&mut self, datagram: &[u8]) {
        self.stats.received_bytes += datagram.len() as u64;
        if self.left {
            return;
        }
        if datagram.len() > MAX_DATAGRAM {
            self.stats.rejected += 1;
            tracing::debug!(len = datagram.len(), "gossip dropped: datagram too long");
            return;
        }
        let payload = match self.envelope.open(datagram) {
            Ok(p) => p,
            Err(why) => {
                self.stats.rejected += 1;
                match why {
                    Rejected::BadTag => tracing::warn!("gossip dropped: {why}"),
                    _ => tracing::debug!("gossip dropped: {why}"),
                }
                return;
            }
        };
        let trimmed = match self.admit(payload) {
            Ok(trimmed) => trimmed,
            Err(why) => {
                self.stats.rejected += 1;
                tracing::warn!("gossip dropped: {why}");
                return;
            }
        };
        self.stats.received += 1;
        let result = self.swim.handle_data(trimmed.as_deref().unwrap_or(payload), &mut self.out);
        if let Err(e) = &result {
            // Authenticated, yet not understood: a member of another
            // version or a bug; nothing of it was applied.
            self.stats.rejected += 1;
            tracing::debug!(error = %e, "gossip not applied");
        }
        self.settle(Ok(()));
    }

    pub(crate) fn handle_timer(&mut self, timer: Timer) {
        if self.left || timer.instance != self.instance {
            return;
        }
        let announce = matches!(timer.timer, foca::Timer::PeriodicAnnounce(_));
        if announce && self.joining_announces > 0 {
            self.joining_announces -= 1;
            if self.joining_announces == 0 {
                // Takes effect when foca next re-arms the announce.
                if let Err(e) = self.swim.set_config(self.config.clone()) {
                    tracing::debug!(error = %e, "gossip engine settings");
                }
            }
        }
        let result = self.swim.handle_timer(timer.timer, &mut self.out);
        self.settle(result);
        if announce && self.my_version > 0 {
            // A version rides on broadcasts, which a member cut off while
            // they spread (too briefly to be declared down) never gets, and
            // nothing else tells it: it would hold the set it had until
            // this node changed again. So the version goes out again at
            // every announce: the registry's anti-entropy. Members that
            // have it drop it without passing it on, so at rest this costs
            // the few datagrams that carry it from this node every 15 s.
            self.publish_version(self.my_version);
        }
    }

    /// Checks what foca would take from `payload` before it does (with
    /// foca's own decoder; what does not decode, foca refuses anyway).
    /// Every identity named must have a name of at most [`MAX_NAME`] bytes,
    /// or the datagram is dropped. Near the bound, foca must stay within
    /// `max_members`: a datagram from a member foca does not know is
    /// dropped when there is no room for it, and updates about members it
    /// does not know are taken only while there is room; the payload comes
    /// back trimmed of the others (`Some`), so a full node still answers the
    /// members it knows. Gossip from a member cannot make this node track
    /// members without bound.
    fn admit(&mut self, payload: &[u8]) -> Result<Option<Vec<u8>>, &'static str> {
        let mut codec = PostcardCodec;
        let mut rest = payload;
        let Ok(header) = Codec::<Ident>::decode_header(&mut codec, &mut rest) else { return Ok(None) };
        let header_len = payload.len() - rest.len();
        // Each update's identity and where its bytes are in `payload`; the
        // count is read as foca reads it.
        let mut updates = Vec::new();
        let mut end = header_len;
        if rest.len() >= 2 && header.message != foca::Message::Broadcast {
            let count = u16::from_be_bytes([rest[0], rest[1]]);
            rest = &rest[2..];
            end += 2;
            for _ in 0..count {
                let before = rest.len();
                let Ok(member) = Codec::<Ident>::decode_member(&mut codec, &mut rest) else { break };
                let len = before - rest.len();
                updates.push((member.id().clone(), end..end + len));
                end += len;
            }
        }
        let names = [&header.src, &header.dst].into_iter().chain(updates.iter().map(|(id, _)| id));
        if names.into_iter().any(|id| id.name.as_ref().is_some_and(|n| n.len() > MAX_NAME)) {
            return Err("a member's name is longer than MAX_NAME");
        }
        let known = self.swim.iter_membership_state().len();
        if known + MAX_NEW_PER_DATAGRAM <= self.max_members {
            return Ok(None);
        }
        let is_new = |addr: SocketAddr| {
            addr != self.swim.identity().addr && !self.swim.iter_membership_state().any(|m| m.id().addr == addr)
        };
        let mut room = self.max_members.saturating_sub(known);
        if is_new(header.src.addr) {
            if room == 0 {
                return Err("this node tracks max_members members and the sender is not one of them");
            }
            room -= 1;
        }
        let mut taken = std::collections::HashSet::new();
        let mut kept = Vec::with_capacity(updates.len());
        for (id, bytes) in &updates {
            if id.addr == header.src.addr || !is_new(id.addr) || taken.contains(&id.addr) {
                kept.push(bytes.clone());
            } else if room > 0 {
                room -= 1;
                taken.insert(id.addr);
                kept.push(bytes.clone());
            }
        }
        let ignored = updates.len() - kept.len();
        if ignored == 0 {
            return Ok(None);
        }
        self.stats.ignored_updates += ignored as u64;
        tracing::warn!(
            ignored,
            max = self.max_members,
            "gossip about new members ignored: this node tracks max_members"
        );
        let mut trimmed = Vec::with_capacity(payload.len());
        trimmed.extend_from_slice(&payload[..header_len]);
        trimmed.extend_from_slice(&(kept.len() as u16).to_be_bytes());
        for bytes in kept {
            trimmed.extend_from_slice(&payload[bytes]);
        }
        trimmed.extend_from_slice(&payload[end..]);
        Ok(Some(trimmed))
    }

    /// Leaves the cluster: takes an identity marked as leaving (so every
    /// member reports `NodeLeft`, not `NodeDown`) and declares it down.
    pub(crate) fn leave(&mut self) {
        if self.left {
            return;
        }
        let mut leaving = self.swim.identity().clone();
        leaving.leaving = true;
        leaving.bump = leaving.bump.wrapping_add(1);
        let changed = self.swim.change_identity(leaving, &mut self.out);
        self.settle(changed);
        let result = self.swim.leave_cluster(&mut self.out);
        self.settle(result);
        self.left = true;
        self.out.timers.clear();
    }

    /// The next datagram to send, sealed.
    pub(crate) fn poll_transmit(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        let (to, payload) = self.out.sends.pop_front()?;
        let mut datagram = Vec::new();
        self.envelope.seal(&payload, &mut datagram);
        self.stats.sent += 1;
        self.stats.sent_bytes += datagram.len() as u64;
        Some((to, datagram))
    }

    /// The next timer to start: hand it back through `handle_timer` after
    /// the duration.
    pub(crate) fn poll_timer(&mut self) -> Option<(Duration, Timer)> {
        let (after, timer) = self.out.timers.pop_front()?;
        Some((after, Timer { instance: self.instance, timer }))
    }

    pub(crate) fn poll_event(&mut self) -> Option<ClusterEvent> {
        self.events.pop_front()
    }

    pub(crate) fn members(&self) -> Vec<Member> {
        self.view.members()
    }

    pub(crate) fn me(&self) -> Member {
        self.view.member(self.swim.identity(), if self.left { MemberStatus::Left } else { MemberStatus::Up })
    }

    pub(crate) fn stats(&self) -> GossipStats {
        self.stats
    }

    /// This node's identity as foca knows it now (what datagrams to it name
    /// as their destination).
    #[cfg(any(test, fuzzing, feature = "fuzzing"))]
    pub(crate) fn ident(&self) -> &Ident {
        self.swim.identity()
    }

    /// Members foca tracks, live and down (the view may hold fewer).
    #[cfg(any(test, fuzzing, feature = "fuzzing"))]
    pub(crate) fn tracked(&self) -> usize {
        self.swim.iter_membership_state().len()
    }

    /// Turns what foca noted during a call into view changes and events.
    fn settle(&mut self, result: Result<(), foca::Error>) {
        if let Err(e) = result {
            tracing::debug!(error = %e, "gossip engine");
        }
        let mut rejoined = None;
        let mut alone = false;
        loop {
            let Some(note) = self.out.notes.pop_front() else {
                // What a fresh foca notes (members carried over) is settled
                // in turn.
                if let Some(id) = rejoined.take() {
                    self.start_afresh(id);
                    continue;
                }
                if std::mem::take(&mut alone) && !self.left && !self.swim.identity().leaving {
                    self.start_afresh(self.swim.identity().clone());
                    continue;
                }
                break;
            };
            match note {
                OwnedNotification::MemberUp(id) => self.view.up(&id, &mut self.events),
                OwnedNotification::MemberDown(id) => self.view.down(&id, &mut self.events),
                OwnedNotification::Rename(_, new) => {
                    let active = self.swim.iter_members().any(|m| *m.id() == new);
                    self.view.rename(&new, active, &mut self.events)
                }
                OwnedNotification::Rejoin(id) => {
                    tracing::info!(bump = id.bump, "declared down by the cluster while alive; rejoining");
                    rejoined = Some(id);
                }
                OwnedNotification::Idle => {
                    tracing::info!("no live member known; waiting for seeds");
                    alone = true;
                }
                OwnedNotification::Active => tracing::debug!("in the cluster"),
                OwnedNotification::Defunct => tracing::debug!("gossip identity down"),
            }
        }
    }

    /// Replaces foca with a fresh instance under `me` that knows the members
    /// up, and announces it to members it knew. Done when foca renewed its
    /// identity (`me`), having learnt the cluster declared it down, and when
    /// it has declared every member it knew down (`me` unchanged).
    ///
    /// Either way this node was most likely the one cut off (a partition, a
    /// long pause), and in that time it declared others down: its foca
    /// holds those verdicts as claims, unsent (there was nobody left to send
    /// them to), and as members down, which it answers with `TurnUndead`
    /// (making them change identity and declare their old one down). Once
    /// back, either would take down healthy members that never lost each
    /// other. A fresh foca holds neither; it learns the rest of the cluster
    /// from the answers to its announces (`foca::Foca::reset` notes that
    /// recreating foca is how its updates are dropped). It is told the
    /// members up, without passing that on, so that each member the view
    /// reports up is still watched.
    fn start_afresh(&mut self, me: Ident) {
        let known: Vec<SocketAddr> =
            self.swim.iter_membership_state().map(|m| m.id().addr).take(REJOIN_ANNOUNCES).collect();
        let up: Vec<foca::Member<Ident>> = self.swim.iter_members().cloned().collect();
        self.instance += 1;
        let rng = SmallRng::seed_from_u64(self.seed.wrapping_add(self.instance));
        let handler = Versions(self.versions.clone());
        self.swim = Foca::with_custom_broadcast(me, joining(&self.config), rng, PostcardCodec, handler);
        self.joining_announces = JOINING_ANNOUNCES;
        // What the old foca asked for during this call and was not carried
        // out yet is dropped with it: its datagrams carry the stale claims.
        self.out.sends.clear();
        self.out.timers.clear();
        if let Err(e) = self.swim.apply_many(up.into_iter(), false, &mut self.out) {
            tracing::debug!(error = %e, "carrying members over");
        }
        for addr in known {
            self.announce(addr);
        }
        if self.my_version > 0 {
            self.publish_version(self.my_version);
        }
    }

    /// Tells the cluster this node's registry is at `version` now: the item
    /// rides on gossip until every member is likely to have it, and goes to
    /// a few members at once.
    pub(crate) fn publish_version(&mut self, version: u64) {
        self.my_version = version;
        if self.left {
            return;
        }
        let item = version_item(self.swim.identity().node, version);
        if let Err(e) = self.swim.add_broadcast(&item) {
            tracing::debug!(error = %e, "registry version not broadcast");
            return;
        }
        let result = self.swim.broadcast(&mut self.out);
        self.settle(result);
    }

    /// A member's registry version newer than heard before.
    pub(crate) fn poll_version(&mut self) -> Option<(NodeId, u64)> {
        self.versions.lock().unwrap_or_else(|e| e.into_inner()).fresh.pop()
    }

    /// The newest registry version heard of `node`, if any.
    pub(crate) fn version_of(&self, node: NodeId) -> Option<u64> {
        self.versions.lock().unwrap_or_else(|e| e.into_inner()).seen.get(&node).copied()
    }

    /// Sends this node's registry version out again, if it ever published:
    /// a member that just came up missed it.
    pub(crate) fn republish_version(&mut self) {
        if self.my_version > 0 {
            self.publish_version(self.my_version);
        }
    }

    /// Forgets what was heard of `node`'s registry (it is gone).
    pub(crate) fn forget_version(&mut self, node: NodeId) {
        self.versions.lock().unwrap_or_else(|e| e.into_inner()).seen.remove(&node);
    }
}

/// `config` at the joining pace: announces every [`JOINING_ANNOUNCE`].
fn joining(config: &foca::Config) -> foca::Config {
    let mut joining = config.clone();
    if let Some(p) = joining.periodic_announce.as_mut() {
        p.frequency = JOINING_ANNOUNCE;
    }
    joining
}

/// Members a rejoining node announces itself to at once; seed rounds reach
/// the rest.
const REJOIN_ANNOUNCES: usize = 8;

/// What this node knows of every other member, and the rules that turn
/// foca's notifications into [`ClusterEvent`]s: one entry per address (a
/// restarted node takes its predecessor's), so events are ordered per
/// member and each change is reported once.
pub(crate) struct View {
    members: HashMap<SocketAddr, Entry>,
    max: usize,
    /// Bumped at every change; orders entries for eviction.
    clock: u64,
}

struct Entry {
    ident: Ident,
    status: MemberStatus,
    changed: u64,
}

impl View {
    pub(crate) fn new(max: usize) -> View {
        View { members: HashMap::new(), max, clock: 0 }
    }

    fn member(&self, id: &Ident, status: MemberStatus) -> Member {
        Member { id: id.node, name: id.name.clone(), addr: id.addr, status }
    }

    pub(crate) fn members(&self) -> Vec<Member> {
        let mut all: Vec<Member> = self.members.values().map(|e| self.member(&e.ident, e.status)).collect();
        all.sort_by_key(|m| m.addr);
        all
    }

    /// Sets the entry at `id`'s address, making room if needed: the entry
    /// down or left the longest is forgotten. A full view of live members
    /// takes no more (and says so).
    fn set(&mut self, id: &Ident, status: MemberStatus) -> bool {
        self.clock += 1;
        if !self.members.contains_key(&id.addr) && self.members.len() >= self.max {
            let oldest = self
                .members
                .iter()
                .filter(|(_, e)| e.status != MemberStatus::Up)
                .min_by_key(|(_, e)| e.changed)
                .map(|(a, _)| *a);
            match oldest {
                Some(a) => {
                    self.members.remove(&a);
                }
                None => {
                    tracing::warn!(max = self.max, member = %id.addr, "cluster view full; member not tracked");
                    return false;
                }
            }
        }
        self.members.insert(id.addr, Entry { ident: id.clone(), status, changed: self.clock });
        true
    }

    pub(crate) fn up(&mut self, id: &Ident, events: &mut VecDeque<ClusterEvent>) {
        let before = self.members.get(&id.addr).map(|e| (e.ident.node, e.status));
        if !self.set(id, MemberStatus::Up) {
            return;
        }
        let member = self.member(id, MemberStatus::Up);
        match before {
            Some((old, _)) if old != id.node => events.push_back(ClusterEvent::NodeRestarted { old, member }),
            Some((_, MemberStatus::Up)) => {}
            _ => events.push_back(ClusterEvent::NodeUp(member)),
        }
    }

    pub(crate) fn down(&mut self, id: &Ident, events: &mut VecDeque<ClusterEvent>) {
        let Some(e) = self.members.get(&id.addr) else { return };
        if e.ident.node != id.node || e.status != MemberStatus::Up {
            return;
        }
        self.gone(id, events);
    }

    /// An `Up` member at `id`'s address is gone: it left if `id` says so.
    fn gone(&mut self, id: &Ident, events: &mut VecDeque<ClusterEvent>) {
        if id.leaving {
            self.set(id, MemberStatus::Left);
            events.push_back(ClusterEvent::NodeLeft(self.member(id, MemberStatus::Left)));
        } else {
            self.set(id, MemberStatus::Down);
            let member = self.member(id, MemberStatus::Down);
            events.push_back(ClusterEvent::NodeDown { member, reason: DownReason::Unreachable });
        }
    }

    /// foca now knows the member at `new`'s address as `new` (`active`:
    /// whether it is up). What is reported depends on what this view last
    /// reported there, not on foca's previous identity: the two differ when
    /// foca was started afresh.
    pub(crate) fn rename(&mut self, new: &Ident, active: bool, events: &mut VecDeque<ClusterEvent>) {
        let Some(e) = self.members.get(&new.addr) else { return };
        if e.status != MemberStatus::Up {
            // Reported when `new` comes up (`up` sees the new id).
            return;
        }
        if !active {
            // A new process first heard of as already down: what is gone is
            // the process subscribers know there (its restart is reported
            // if the new one comes up).
            let gone = if e.ident.node == new.node { new.clone() } else { e.ident.clone() };
            self.gone(&gone, events);
        } else if e.ident.node != new.node {
            let old = e.ident.node;
            self.set(new, MemberStatus::Up);
            events.push_back(ClusterEvent::NodeRestarted { old, member: self.member(new, MemberStatus::Up) });
        } else {
            // The same process, rejoined or leaving: news only when it goes.
            self.set(new, MemberStatus::Up);
        }
    }
}

#[cfg(test)]
mod bound_tests {
    use super::*;
    use crate::cluster::tests::hostile::encode;
    use foca::{Header, Member as SwimMember, Message};

    fn ident(n: u32) -> Ident {
        Ident {
            node: NodeId(uuid::Uuid::from_u128(n as u128 + 1)),
            addr: SocketAddr::from(([127, 0, (n >> 8) as u8, n as u8], 7000)),
            started: 1,
            bump: 0,
            name: None,
            leaving: false,
        }
    }

    /// `message` from `src` to `dst` naming `members` as alive, sealed.
    fn sealed(
        envelope: &Envelope,
        src: &Ident,
        dst: &Ident,
        message: Message<Ident>,
        members: impl Iterator<Item = Ident>,
    ) -> Vec<u8> {
        let header = Header { src: src.clone(), src_incarnation: 0, dst: dst.clone(), message };
        let updates: Vec<SwimMember<Ident>> = members.map(SwimMember::alive).collect();
        let mut datagram = Vec::new();
        envelope.seal(&encode(&header, &updates), &mut datagram);
        datagram
    }

    /// A sealed `Gossip` from `src` to `dst` naming `members` as alive.
    fn gossip(envelope: &Envelope, src: &Ident, dst: &Ident, members: impl Iterator<Item = Ident>) -> Vec<u8> {
        sealed(envelope, src, dst, Message::Gossip, members)
    }

    /// A member with the cookie names ever more members: the node tracks no
    /// more than `max_members`, and keeps tracking the ones it had.
    #[test]
    fn gossip_naming_endless_members_is_bounded() {
        let cookie = Cookie::new([1u8; 32]);
        let envelope = Envelope::new(Some(&cookie));
        let cfg = ClusterConfig { max_members: 100, ..ClusterConfig::default() };
        let me = ident(0);
        let mut engine = Engine::new(me.clone(), &cfg, Some(&cookie), 7);
        let honest = ident(1);
        engine.handle_datagram(&gossip(&envelope, &honest, &me, std::iter::empty()));
        assert_eq!(engine.members().len(), 1);
        let hostile = ident(2);
        let mut next = 3;
        for _ in 0..200 {
            let batch = (next..next + 20).map(ident);
            next += 20;
            engine.handle_datagram(&gossip(&envelope, &hostile, &me, batch));
            assert!(engine.swim.iter_membership_state().len() <= cfg.max_members);
        }
        assert!(engine.members().len() <= cfg.max_members);
        assert!(engine.members().iter().any(|m| m.id == honest.node), "the honest member is still tracked");
        assert!(engine.stats().ignored_updates > 0, "updates past the bound are counted");
    }

    /// A full node still answers the members it knows, whatever news about
    /// others their datagrams carry.
    #[test]
    fn a_full_node_still_acks_a_known_member_whose_ping_names_a_new_one() {
        let cookie = Cookie::new([1u8; 32]);
        let envelope = Envelope::new(Some(&cookie));
        let cfg = ClusterConfig { max_members: 2, ..ClusterConfig::default() };
        let me = ident(0);
        let mut engine = Engine::new(me.clone(), &cfg, Some(&cookie), 7);
        engine.handle_datagram(&gossip(&envelope, &ident(1), &me, std::iter::once(ident(2))));
        assert_eq!(engine.tracked(), 2);
        while engine.poll_transmit().is_some() {}
        engine.handle_datagram(&sealed(&envelope, &ident(1), &me, Message::Ping(9), std::iter::once(ident(3))));
        assert_eq!(engine.tracked(), 2, "the new member is not tracked");
        assert_eq!(engine.stats().ignored_updates, 1);
        let mut acked = false;
        while let Some((to, d)) = engine.poll_transmit() {
            let mut rest = envelope.open(&d).unwrap();
            let h: Header<Ident> = Codec::<Ident>::decode_header(&mut PostcardCodec, &mut rest).unwrap();
            acked |= to == ident(1).addr && h.message == Message::Ack(9);
        }
        assert!(acked, "the ping was answered");
    }

    /// A name longer than gossip carries is refused with its datagram.
    #[test]
    fn gossip_naming_a_member_with_a_long_name_is_dropped() {
        let cookie = Cookie::new([1u8; 32]);
        let envelope = Envelope::new(Some(&cookie));
        let me = ident(0);
        let mut engine = Engine::new(me.clone(), &ClusterConfig::default(), Some(&cookie), 7);
        let mut long = ident(5);
        long.name = Some("n".repeat(MAX_NAME + 1));
        engine.handle_datagram(&gossip(&envelope, &ident(1), &me, std::iter::once(long.clone())));
        assert!(engine.members().is_empty(), "nothing of the datagram was applied");
        assert_eq!(engine.stats().rejected, 1);
        long.name = Some("n".repeat(MAX_NAME));
        engine.handle_datagram(&gossip(&envelope, &ident(1), &me, std::iter::once(long)));
        assert_eq!(engine.members().len(), 2, "a name of MAX_NAME bytes is fine");
    }
}

#[cfg(test)]
mod version_tests {
    use super::*;

    fn ident(n: u8) -> Ident {
        Ident {
            node: NodeId(uuid::Uuid::from_bytes([n; 16])),
            addr: SocketAddr::from(([127, 0, 0, 1], 7000 + n as u16)),
            started: 1,
            bump: 0,
            name: None,
            leaving: false,
        }
    }

    #[test]
    fn versions_pass_on_while_new_and_the_book_stays_bounded() {
        let book = Arc::new(Mutex::new(Book { cap: 2, ..Book::default() }));
        let mut h = Versions(book.clone());
        let from = ident(9);
        let item = |n: u8, v: u64| version_item(ident(n).node, v);
        assert!(h.receive_item(&item(1, 3), Some(&from)).unwrap().is_some());
        assert!(h.receive_item(&item(1, 3), Some(&from)).unwrap().is_none(), "not new: not passed on");
        assert!(h.receive_item(&item(1, 2), Some(&from)).unwrap().is_none(), "older");
        assert!(h.receive_item(&item(1, 4), Some(&from)).unwrap().is_some());
        assert!(h.receive_item(&item(2, 1), Some(&from)).unwrap().is_some());
        assert!(h.receive_item(&item(3, 1), Some(&from)).unwrap().is_some(), "a full book makes room");
        assert_eq!(book.lock().unwrap().seen.len(), 2, "and stays bounded");
        assert_eq!(
            book.lock().unwrap().fresh,
            [(ident(1).node, 3), (ident(1).node, 4), (ident(2).node, 1), (ident(3).node, 1)]
        );
        assert!(h.receive_item(&[0; 23], Some(&from)).is_err(), "a malformed item is an error");
        let newer = VersionKey { node: ident(1).node, version: 5 };
        assert!(newer.invalidates(&VersionKey { node: ident(1).node, version: 4 }));
        assert!(!newer.invalidates(&VersionKey { node: ident(2).node, version: 4 }));
    }
}
