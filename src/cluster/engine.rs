//! The membership engine without I/O: foca (SWIM) behind tether's
//! envelope, and the view that turns foca's notifications into the events
//! users see. The driver feeds it datagrams and timers and carries out what
//! it asks (`poll_transmit`, `poll_timer`); tests drive it with a virtual
//! network and clock.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::num::{NonZeroU8, NonZeroUsize};
use std::time::Duration;

use foca::{Foca, NoCustomBroadcast, Notification, OwnedNotification, PostcardCodec, Timer};
use rand::rngs::SmallRng;
use rand::SeedableRng;

use super::envelope::{Envelope, Rejected, OVERHEAD};
use super::identity::Ident;
use super::{ClusterConfig, ClusterEvent, DownReason, Member, MemberStatus};
use crate::auth::Cookie;
use crate::NodeId;

/// Largest engine payload in a datagram; with the envelope a datagram stays
/// below 1,472 bytes, what fits one Ethernet frame after IP and UDP headers.
pub(crate) const MAX_PAYLOAD: usize = 1400;
/// Largest datagram accepted.
pub(crate) const MAX_DATAGRAM: usize = MAX_PAYLOAD + OVERHEAD;

type Swim = Foca<Ident, PostcardCodec, SmallRng, NoCustomBroadcast>;

/// Counters of the gossip a node sent and received.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct GossipStats {
    /// Datagrams sent.
    pub sent: u64,
    /// Bytes sent (whole datagrams).
    pub sent_bytes: u64,
    /// Datagrams received and accepted.
    pub received: u64,
    /// Bytes received (whole datagrams, accepted or not).
    pub received_bytes: u64,
    /// Datagrams dropped: not gossip, another version, a bad tag (a sender
    /// without the cookie), or undecodable.
    pub rejected: u64,
}

/// What foca asks of its runtime, gathered during one call.
#[derive(Default)]
struct Outbox {
    sends: VecDeque<(SocketAddr, Vec<u8>)>,
    timers: VecDeque<(Duration, Timer<Ident>)>,
    notes: VecDeque<OwnedNotification<Ident>>,
}

impl foca::Runtime<Ident> for Outbox {
    fn notify(&mut self, notification: Notification<'_, Ident>) {
        self.notes.push_back(notification.to_owned());
    }

    fn send_to(&mut self, to: Ident, data: &[u8]) {
        self.sends.push_back((to.addr, data.to_vec()));
    }

    fn submit_after(&mut self, event: Timer<Ident>, after: Duration) {
        self.timers.push_back((after, event));
    }
}

pub(crate) struct Engine {
    swim: Swim,
    envelope: Envelope,
    out: Outbox,
    view: View,
    events: VecDeque<ClusterEvent>,
    stats: GossipStats,
    left: bool,
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
            // A full member list from a random member now and then: the
            // anti-entropy that broadcasts alone lack.
            periodic_announce: Some(foca::PeriodicParams {
                frequency: Duration::from_secs(15),
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
        Engine {
            view: View::new(me.clone(), cfg.max_members),
            swim: Foca::new(me, config, SmallRng::seed_from_u64(seed), PostcardCodec),
            envelope: Envelope::new(cookie),
            out: Outbox::default(),
            events: VecDeque::new(),
            stats: GossipStats::default(),
            left: false,
        }
    }

    /// Asks the member at `addr` to let this node in (a seed); it answers
    /// with the members it knows.
    pub(crate) fn announce(&mut self, addr: SocketAddr) {
        if addr == self.view.me.addr || self.left {
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
        self.stats.received += 1;
        let result = self.swim.handle_data(payload, &mut self.out);
        if let Err(e) = &result {
            // Authenticated, yet not understood: a member of another
            // version or a bug; nothing of it was applied.
            self.stats.rejected += 1;
            tracing::debug!(error = %e, "gossip not applied");
        }
        self.settle(Ok(()));
    }

    pub(crate) fn handle_timer(&mut self, timer: Timer<Ident>) {
        if self.left {
            return;
        }
        let result = self.swim.handle_timer(timer, &mut self.out);
        self.settle(result);
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
    pub(crate) fn poll_timer(&mut self) -> Option<(Duration, Timer<Ident>)> {
        self.out.timers.pop_front()
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

    /// Turns what foca noted during a call into view changes and events.
    fn settle(&mut self, result: Result<(), foca::Error>) {
        if let Err(e) = result {
            tracing::debug!(error = %e, "gossip engine");
        }
        while let Some(note) = self.out.notes.pop_front() {
            match note {
                OwnedNotification::MemberUp(id) => self.view.up(&id, &mut self.events),
                OwnedNotification::MemberDown(id) => self.view.down(&id, &mut self.events),
                OwnedNotification::Rename(old, new) => {
                    let active = self.swim.iter_members().any(|m| *m.id() == new);
                    self.view.rename(&old, &new, active, &mut self.events)
                }
                OwnedNotification::Rejoin(id) => {
                    tracing::info!(bump = id.bump, "declared down by the cluster while alive; rejoined")
                }
                OwnedNotification::Idle => tracing::info!("no live member known; waiting for seeds"),
                OwnedNotification::Active => tracing::debug!("in the cluster"),
                OwnedNotification::Defunct => tracing::debug!("gossip identity down"),
            }
        }
    }
}

/// What this node knows of every other member, and the rules that turn
/// foca's notifications into [`ClusterEvent`]s: one entry per address (a
/// restarted node takes its predecessor's), so events are ordered per
/// member and each change is reported once.
pub(crate) struct View {
    me: Ident,
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
    pub(crate) fn new(me: Ident, max: usize) -> View {
        View { me, members: HashMap::new(), max, clock: 0 }
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

    /// foca now knows the member at `old`'s address as `new` (`active`:
    /// whether `new` is up).
    pub(crate) fn rename(&mut self, old: &Ident, new: &Ident, active: bool, events: &mut VecDeque<ClusterEvent>) {
        let Some(e) = self.members.get(&new.addr) else { return };
        if e.status != MemberStatus::Up {
            // Reported when `new` comes up (`up` sees the new id).
            return;
        }
        if !active {
            self.gone(new, events);
        } else if old.node != new.node {
            self.set(new, MemberStatus::Up);
            events.push_back(ClusterEvent::NodeRestarted { old: old.node, member: self.member(new, MemberStatus::Up) });
        } else {
            // The same process, rejoined or leaving: news only when it goes.
            self.set(new, MemberStatus::Up);
        }
    }
}
