//! Hostile gossip, and what it must never do to an engine.
//!
//! A datagram that fails the envelope (no cookie, another cookie, altered
//! on the way) changes nothing. One sealed with the cookie comes from a
//! member, whom SWIM trusts: it may change what the engine reports about the
//! members it names (its sender and the members its updates are about), and
//! about no one else, unless it tells the engine that the cluster declared
//! it down: the engine then rejoins with a fresh gossip state, and its view
//! follows what that state learns. Neither kind may panic the engine or
//! grow its view past `max_members`.
//!
//! [`run`] is the fuzz harness (`tether::fuzz::gossip`): it reads its input
//! as a script of datagrams (raw, sealed, or built from a compact
//! description so that the fuzzer reaches foca's logic at once) and timer
//! firings, and checks the rules above at every step.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::time::Duration;

use crate::cluster::engine::Timer;
use foca::{Codec, Header, Member as Update, Message, PostcardCodec, State};

use super::super::engine::{Engine, MAX_DATAGRAM};
use super::super::envelope::Envelope;
use super::super::identity::Ident;
use super::super::{ClusterConfig, ClusterEvent, Member, MemberStatus};
use super::history::{check_history, subject};
use crate::auth::Cookie;
use crate::NodeId;

/// The cookie of the simulated and fuzzed clusters.
pub(crate) const COOKIE: [u8; 32] = [0x5e; 32];

/// The envelope of [`COOKIE`].
pub(crate) fn envelope() -> Envelope {
    Envelope::new(Some(&Cookie::new(COOKIE)))
}

/// The addresses a gossip payload names: its sender and the members of its
/// updates (as far as they decode). The targets of indirect probes are not
/// among them: a probe is not a claim about its target.
pub(crate) fn named(payload: &[u8]) -> HashSet<SocketAddr> {
    let mut codec = PostcardCodec;
    let mut buf = payload;
    let mut named = HashSet::new();
    let Ok(header) = Codec::<Ident>::decode_header(&mut codec, &mut buf) else { return named };
    named.insert(header.src.addr);
    if buf.len() >= 2 && header.message != Message::Broadcast {
        let count = u16::from_be_bytes([buf[0], buf[1]]);
        buf = &buf[2..];
        for _ in 0..count {
            match Codec::<Ident>::decode_member(&mut codec, &mut buf) {
                Ok(update) => named.insert(update.id().addr),
                Err(_) => break,
            };
        }
    }
    named
}

/// A gossip payload: `header`, then `updates` (with their count) if any.
pub(crate) fn encode(header: &Header<Ident>, updates: &[Update<Ident>]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut codec = PostcardCodec;
    codec.encode_header(header, &mut out).expect("a Vec grows");
    if !updates.is_empty() {
        out.extend_from_slice(&(updates.len() as u16).to_be_bytes());
        for u in updates {
            codec.encode_member(u, &mut out).expect("a Vec grows");
        }
    }
    out
}

/// Hands `datagram` to `engine` and checks the rules of this module against
/// what the engine reports before and after (`open`: the envelope the
/// engine's cookie makes). The events it reported; the datagrams and timers
/// it asked for are left queued.
pub(crate) fn deliver(
    engine: &mut Engine,
    open: &Envelope,
    datagram: &[u8],
    max_members: usize,
) -> Result<Vec<ClusterEvent>, String> {
    let before = engine.members();
    let me = engine.ident().clone();
    let payload = open.open(datagram).ok();
    let named = payload.map(named).unwrap_or_default();
    engine.handle_datagram(datagram);
    let events: Vec<ClusterEvent> = std::iter::from_fn(|| engine.poll_event()).collect();
    let after = engine.members();
    if after.len() > max_members {
        return Err(format!("{} members tracked, at most {max_members} allowed", after.len()));
    }
    if payload.is_none() {
        if after != before || !events.is_empty() {
            return Err(format!("a datagram without the cookie changed the view: {events:?}"));
        }
        if let Some((to, _)) = engine.poll_transmit() {
            return Err(format!("a datagram without the cookie was answered (to {to})"));
        }
        return Ok(events);
    }
    if *engine.ident() != me {
        // Told it was declared down: it rejoined afresh.
        return Ok(events);
    }
    if let Some(e) = events.iter().find(|e| !named.contains(&subject(e).addr)) {
        return Err(format!("an event about a member the datagram does not name ({named:?}): {e:?}"));
    }
    let others = |ms: &[Member]| ms.iter().filter(|m| !named.contains(&m.addr)).cloned().collect::<Vec<_>>();
    let (was, is) = (others(&before), others(&after));
    // A full view makes room by forgetting the member down or left the
    // longest, whoever it is: that is the one change allowed to others.
    let forgotten = |m: &Member| m.status != MemberStatus::Up && after.len() == max_members;
    let kept = is.iter().all(|m| was.contains(m));
    let lost_only_forgettable = was.iter().all(|m| is.contains(m) || forgotten(m));
    if !kept || !lost_only_forgettable {
        return Err(format!("members the datagram does not name ({named:?}) changed: {was:#?}\nbecame {is:#?}"));
    }
    Ok(events)
}

/// What a run of the fuzz harness did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Summary {
    pub(crate) datagrams: usize,
    /// Datagrams that passed the envelope.
    pub(crate) opened: usize,
    pub(crate) timers_fired: usize,
    pub(crate) events: usize,
    /// Most members the view held at any point.
    pub(crate) peak_members: usize,
    /// Most members foca tracked (live and down) at any point.
    pub(crate) peak_tracked: usize,
}

/// The view bound of the fuzzed engine: small, so that making room is
/// exercised.
pub(crate) const FUZZ_MAX_MEMBERS: usize = 8;
/// Members the fuzzed engine knows before the input (through a `Feed`).
pub(crate) const FUZZ_KNOWN: u8 = 4;

fn fuzz_addr(a: u8, b: u8) -> SocketAddr {
    SocketAddr::from(([10, 0, a, b], 7000))
}

/// The fuzzed engine's own identity.
fn target() -> Ident {
    Ident {
        node: NodeId(uuid::Uuid::from_u128(1)),
        addr: fuzz_addr(0, 1),
        started: 1_000,
        bump: 0,
        name: Some("target".into()),
        leaving: false,
    }
}

/// A member known before the input (1..=FUZZ_KNOWN) as it first joined.
fn known(n: u8) -> Ident {
    Ident {
        node: NodeId(uuid::Uuid::from_u128(100 + u128::from(n))),
        addr: fuzz_addr(0, 1 + n),
        started: 1_000 + u64::from(n),
        bump: 0,
        name: Some(format!("known{n}")),
        leaving: false,
    }
}

/// An identity picked by one byte: the target itself (0), a known member
/// as it joined, rejoined, restarted or leaving (1..=FUZZ_KNOWN in the low
/// nibble, the high nibble picks), or one of 200-odd strangers (with now
/// and then a name longer than a member may have).
fn pick(k: u8) -> Ident {
    let low = k & 0x0f;
    match low {
        0 => target(),
        n if n <= FUZZ_KNOWN => {
            let id = known(n);
            match k >> 4 {
                0..=3 => id,
                4..=7 => Ident { bump: id.bump + 1, ..id },
                8..=11 => {
                    Ident { node: NodeId(uuid::Uuid::from_u128(200 + u128::from(n))), started: id.started + 1, ..id }
                }
                _ => Ident { bump: id.bump + 1, leaving: true, ..id },
            }
        }
        _ => Ident {
            node: NodeId(uuid::Uuid::from_u128(1_000 + u128::from(k))),
            addr: fuzz_addr(1, k),
            started: u64::from(k),
            bump: 0,
            name: k.is_multiple_of(7).then(|| "x".repeat(300)),
            leaving: false,
        },
    }
}

/// A gossip payload described by `body`: sender, its incarnation, the
/// message (and its probe number and target), the destination (the
/// engine's current identity unless the description says otherwise), then
/// updates as (member, incarnation, state) triples.
fn described(body: &[u8], me: &Ident) -> Vec<u8> {
    let b = |i: usize| body.get(i).copied().unwrap_or(0);
    let probe = b(3);
    let other = pick(b(4));
    let message = match b(2) % 11 {
        0 => Message::Ping(probe),
        1 => Message::Ack(probe),
        2 => Message::PingReq { target: other, probe_number: probe },
        3 => Message::IndirectPing { origin: other, probe_number: probe },
        4 => Message::IndirectAck { target: other, probe_number: probe },
        5 => Message::ForwardedAck { origin: other, probe_number: probe },
        6 => Message::Announce,
        7 => Message::Feed,
        8 => Message::Gossip,
        9 => Message::Broadcast,
        _ => Message::TurnUndead,
    };
    let dst = if b(5) < 240 { me.clone() } else { pick(b(5)) };
    let header = Header { src: pick(b(0)), src_incarnation: u16::from(b(1)), dst, message };
    let updates: Vec<Update<Ident>> = body
        .get(6..)
        .unwrap_or_default()
        .chunks(3)
        .map(|u| {
            let state = match u.get(2).copied().unwrap_or(0) % 3 {
                0 => State::Alive,
                1 => State::Suspect,
                _ => State::Down,
            };
            Update::new(pick(u[0]), u16::from(u.get(1).copied().unwrap_or(0)), state)
        })
        .collect();
    encode(&header, &updates)
}

/// The fuzz harness. `data` is a script of steps, each an opcode byte, a
/// length (two bytes, little-endian) and that many bytes of body:
/// - `op % 4 == 0`: the body is a datagram, as received;
/// - `1`: the body is a payload, sealed with the cookie first;
/// - `2`: the engine's earliest timer (and those due with it) fires;
/// - `3`: the body describes a payload (see `described`), sealed.
///
/// Before the script the engine knows [`FUZZ_KNOWN`] members, from a `Feed`.
/// Panics if any step breaks a rule of this module, or if the whole run's
/// events do not replay to the final view.
pub(crate) fn run(data: &[u8]) -> Summary {
    let open = envelope();
    let seal = |payload: &[u8]| {
        let mut d = Vec::new();
        open.seal(payload, &mut d);
        d
    };
    let mut h = Harness::new();
    let seed = known(1);
    let feed = Header { src: seed.clone(), src_incarnation: 0, dst: target(), message: Message::Feed };
    let others: Vec<Update<Ident>> = (2..=FUZZ_KNOWN).map(|n| Update::alive(known(n))).collect();
    h.engine.announce(seed.addr);
    h.settle(0);
    h.engine.handle_datagram(&seal(&encode(&feed, &others)));
    h.settle(0);
    assert_eq!(h.engine.members().len(), usize::from(FUZZ_KNOWN), "the feed made the known members up");

    let mut rest = data;
    let mut step = 0;
    while let Some((&op, tail)) = rest.split_first() {
        step += 1;
        let len = match tail {
            [a, b, ..] => usize::from(u16::from_le_bytes([*a, *b])),
            _ => 0,
        };
        let tail = tail.get(2..).unwrap_or_default();
        let (body, after) = tail.split_at(len.min(tail.len()).min(MAX_DATAGRAM + 64));
        rest = after;
        let datagram = match op % 4 {
            0 => body.to_vec(),
            1 => seal(body),
            3 => seal(&described(body, h.engine.ident())),
            _ => {
                h.fire();
                h.settle(step);
                continue;
            }
        };
        h.summary.datagrams += 1;
        h.summary.opened += usize::from(open.open(&datagram).is_ok());
        match deliver(&mut h.engine, &open, &datagram, FUZZ_MAX_MEMBERS) {
            Ok(events) => h.history.extend(events.into_iter().map(|e| (step, e))),
            Err(why) => panic!("step {step} (op {op}): {why}"),
        }
        h.settle(step);
    }
    h.summary.events = h.history.len();
    if let Err(why) = check_history(&h.history, &h.engine.members(), true) {
        panic!("{why}");
    }
    h.summary
}

/// The fuzzed engine and its virtual clock.
struct Harness {
    engine: Engine,
    timers: BTreeMap<(Duration, u64), Timer>,
    seq: u64,
    now: Duration,
    /// Every event, with the step that caused it.
    history: Vec<(usize, ClusterEvent)>,
    summary: Summary,
}

impl Harness {
    fn new() -> Harness {
        let cfg = ClusterConfig { max_members: FUZZ_MAX_MEMBERS, ..ClusterConfig::default() };
        Harness {
            engine: Engine::new(target(), &cfg, Some(&Cookie::new(COOKIE)), 7),
            timers: BTreeMap::new(),
            seq: 0,
            now: Duration::ZERO,
            history: Vec::new(),
            summary: Summary::default(),
        }
    }

    /// Advances to the earliest timer and fires every timer due then.
    fn fire(&mut self) {
        if let Some(((due, _), _)) = self.timers.first_key_value() {
            self.now = *due;
        }
        while let Some(entry) = self.timers.first_entry().filter(|e| e.key().0 <= self.now) {
            self.engine.handle_timer(entry.remove());
            self.summary.timers_fired += 1;
        }
    }

    /// Takes what the engine asked for (datagrams go nowhere) and checks
    /// the view's bound.
    fn settle(&mut self, step: usize) {
        while self.engine.poll_transmit().is_some() {}
        while let Some((after, t)) = self.engine.poll_timer() {
            self.seq += 1;
            self.timers.insert((self.now + after, self.seq), t);
        }
        for e in std::iter::from_fn(|| self.engine.poll_event()) {
            self.history.push((step, e));
        }
        let members = self.engine.members().len();
        assert!(members <= FUZZ_MAX_MEMBERS, "step {step}: {members} members in the view");
        self.summary.peak_members = self.summary.peak_members.max(members);
        self.summary.peak_tracked = self.summary.peak_tracked.max(self.engine.tracked());
    }
}
