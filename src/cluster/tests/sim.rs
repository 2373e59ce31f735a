//! A simulated network for membership engines: every engine, every timer
//! it asked for and every datagram in flight, ordered on one virtual clock.
//! Nothing here sleeps or reads the time; a run is a pure function of its
//! seed, so a failing run replays exactly.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::time::Duration;

use crate::cluster::engine::Timer;
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};

use super::super::engine::Engine;
use super::super::identity::Ident;
use super::super::{ClusterConfig, ClusterEvent, MemberStatus};
use super::history::{check_history, subject};
use super::hostile::COOKIE;
use crate::auth::Cookie;
use crate::NodeId;

/// How the simulated network treats datagrams.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Net {
    /// Least one-way delay.
    pub(crate) latency: Duration,
    /// Extra delay drawn uniformly in `0..=jitter` per datagram, which also
    /// reorders datagrams.
    pub(crate) jitter: Duration,
    /// Probability that a datagram is lost.
    pub(crate) loss: f64,
}

impl Net {
    /// A LAN: 1 ms, no jitter, no loss.
    pub(crate) fn lan() -> Net {
        Net { latency: Duration::from_millis(1), jitter: Duration::ZERO, loss: 0.0 }
    }
}

enum Task {
    Timer(usize, Timer),
    Datagram {
        from: SocketAddr,
        to: SocketAddr,
        bytes: Vec<u8>,
    },
    /// A seed round of the driver: announce to each seed that is not an
    /// active member, then again after `seed_interval`.
    Seeds(usize),
}

/// One simulated process.
pub(crate) struct Proc {
    pub(crate) engine: Engine,
    pub(crate) addr: SocketAddr,
    pub(crate) id: NodeId,
    /// Timers fire and datagrams arrive only while running.
    pub(crate) running: bool,
    /// Every event the engine reported, with the virtual time it did.
    pub(crate) events: Vec<(Duration, ClusterEvent)>,
    seeds: Vec<SocketAddr>,
}

pub(crate) struct Sim {
    pub(crate) now: Duration,
    queue: BTreeMap<(Duration, u64), Task>,
    seq: u64,
    pub(crate) procs: Vec<Proc>,
    /// The process answering at each address now.
    at: HashMap<SocketAddr, usize>,
    /// Addresses whose traffic is dropped both ways (a partition).
    cut: HashSet<SocketAddr>,
    /// The side of a split each address is on (0 if not named): traffic
    /// between addresses on different sides is dropped.
    sides: HashMap<SocketAddr, u32>,
    rng: SmallRng,
    pub(crate) net: Net,
    pub(crate) cfg: ClusterConfig,
    /// Datagrams handed to engines, for tests that replay or mutate them.
    pub(crate) delivered: Option<Vec<(usize, Vec<u8>)>>,
}

/// The address of the `i`th process started (restarts reuse theirs).
pub(crate) fn addr_of(i: usize) -> SocketAddr {
    SocketAddr::from(([10, 0, (i / 200) as u8, (i % 200 + 1) as u8], 7000))
}

impl Sim {
    pub(crate) fn new(seed: u64, cfg: ClusterConfig, net: Net) -> Sim {
        Sim {
            now: Duration::ZERO,
            queue: BTreeMap::new(),
            seq: 0,
            procs: Vec::new(),
            at: HashMap::new(),
            cut: HashSet::new(),
            sides: HashMap::new(),
            rng: SmallRng::seed_from_u64(seed),
            net,
            cfg,
            delivered: None,
        }
    }

    /// `n` processes at distinct addresses, the first the seed of all the
    /// others, started together; returns their indices.
    pub(crate) fn start_cluster(&mut self, n: usize) -> Vec<usize> {
        let first = self.start(addr_of(self.procs.len()), &[]);
        let seed = self.procs[first].addr;
        let mut all = vec![first];
        for _ in 1..n {
            all.push(self.start(addr_of(self.procs.len()), &[seed]));
        }
        all
    }

    /// Starts a process at `addr` (a new node id, started now) that looks
    /// for the cluster at `seeds`; a process already there is stopped.
    pub(crate) fn start(&mut self, addr: SocketAddr, seeds: &[SocketAddr]) -> usize {
        let i = self.procs.len();
        if let Some(&old) = self.at.get(&addr) {
            self.procs[old].running = false;
        }
        let id = NodeId(uuid::Uuid::from_u128(self.rng.random()));
        let me = Ident {
            node: id,
            addr,
            // A wall clock far from zero, advancing with virtual time.
            started: 1_700_000_000_000 + self.now.as_millis() as u64,
            bump: 0,
            name: Some(format!("p{i}")),
            leaving: false,
        };
        let engine = Engine::new(me, &self.cfg, Some(&Cookie::new(COOKIE)), self.rng.random());
        self.procs.push(Proc { engine, addr, id, running: true, events: Vec::new(), seeds: seeds.to_vec() });
        self.at.insert(addr, i);
        if !seeds.is_empty() {
            self.schedule(Duration::ZERO, Task::Seeds(i));
        }
        i
    }

    /// Stops `i` for good: no timers, no datagrams in or out (`kill -9`).
    pub(crate) fn stop(&mut self, i: usize) {
        self.procs[i].running = false;
    }

    /// Drops all traffic to and from `addr` until [`Sim::heal`].
    pub(crate) fn cut(&mut self, addr: SocketAddr) {
        self.cut.insert(addr);
    }

    pub(crate) fn heal(&mut self, addr: SocketAddr) {
        self.cut.remove(&addr);
    }

    /// Splits the network: each address talks only to those on its side
    /// (addresses not named are on side 0), until [`Sim::heal_all`].
    pub(crate) fn split(&mut self, sides: HashMap<SocketAddr, u32>) {
        self.sides = sides;
    }

    /// Ends every cut and split.
    pub(crate) fn heal_all(&mut self) {
        self.cut.clear();
        self.sides.clear();
    }

    /// Whether traffic between `a` and `b` gets through now (loss aside).
    pub(crate) fn can_talk(&self, a: SocketAddr, b: SocketAddr) -> bool {
        let side = |x| self.sides.get(&x).copied().unwrap_or(0);
        !self.cut.contains(&a) && !self.cut.contains(&b) && side(a) == side(b)
    }

    /// When the next task is due, if there is one.
    pub(crate) fn next_at(&self) -> Option<Duration> {
        self.queue.first_key_value().map(|((at, _), _)| *at)
    }

    /// `i` leaves the cluster, then its process ends. The datagrams it sends
    /// on the way out go in an order drawn at random (each 1 ms after the
    /// previous one, on top of the network's own delays).
    pub(crate) fn leave(&mut self, i: usize) {
        self.procs[i].engine.leave();
        let mut out = Vec::new();
        while let Some(t) = self.procs[i].engine.poll_transmit() {
            out.push(t);
        }
        for k in (1..out.len()).rev() {
            let j = self.rng.random_range(0..=k);
            out.swap(k, j);
        }
        let from = self.procs[i].addr;
        for (n, (to, bytes)) in out.into_iter().enumerate() {
            self.send(from, to, bytes, Duration::from_millis(n as u64));
        }
        self.pump(i);
        self.procs[i].running = false;
    }

    fn schedule(&mut self, after: Duration, task: Task) {
        self.seq += 1;
        self.queue.insert((self.now + after, self.seq), task);
    }

    fn send(&mut self, from: SocketAddr, to: SocketAddr, bytes: Vec<u8>, extra: Duration) {
        if !self.can_talk(from, to) || self.rng.random_bool(self.net.loss) {
            return;
        }
        let jitter = match self.net.jitter.as_micros() as u64 {
            0 => 0,
            j => self.rng.random_range(0..=j),
        };
        let delay = self.net.latency + Duration::from_micros(jitter) + extra;
        self.schedule(delay, Task::Datagram { from, to, bytes });
    }

    /// Carries out what `i`'s engine asked for and records its events
    /// (done after every task; a test that calls the engine itself calls it
    /// too).
    pub(crate) fn pump(&mut self, i: usize) {
        let from = self.procs[i].addr;
        while let Some((to, bytes)) = self.procs[i].engine.poll_transmit() {
            self.send(from, to, bytes, Duration::ZERO);
        }
        while let Some((after, timer)) = self.procs[i].engine.poll_timer() {
            self.schedule(after, Task::Timer(i, timer));
        }
        while let Some(e) = self.procs[i].engine.poll_event() {
            self.procs[i].events.push((self.now, e));
        }
    }

    /// Runs the next task; false when nothing is left to run.
    pub(crate) fn step(&mut self) -> bool {
        let Some(((at, _), task)) = self.queue.pop_first() else { return false };
        self.now = at;
        match task {
            Task::Timer(i, timer) => {
                if self.procs[i].running {
                    self.procs[i].engine.handle_timer(timer);
                    self.pump(i);
                }
            }
            Task::Datagram { from, to, bytes } => {
                if !self.can_talk(from, to) {
                    return true;
                }
                let Some(&i) = self.at.get(&to) else { return true };
                if self.procs[i].running {
                    if let Some(d) = &mut self.delivered {
                        d.push((i, bytes.clone()));
                    }
                    self.procs[i].engine.handle_datagram(&bytes);
                    self.pump(i);
                }
            }
            Task::Seeds(i) => {
                if self.procs[i].running {
                    for seed in self.procs[i].seeds.clone() {
                        if !self.procs[i].engine.is_active(seed) {
                            self.procs[i].engine.announce(seed);
                        }
                    }
                    self.pump(i);
                    self.schedule(self.cfg.seed_interval, Task::Seeds(i));
                }
            }
        }
        true
    }

    /// Runs every task due up to `t`; the clock then reads `t`.
    pub(crate) fn run_until(&mut self, t: Duration) {
        while self.queue.first_key_value().is_some_and(|((at, _), _)| *at <= t) {
            self.step();
        }
        self.now = t;
    }

    pub(crate) fn run_for(&mut self, d: Duration) {
        self.run_until(self.now + d);
    }

    /// Runs until `done` holds (checked after every task), at most until
    /// `deadline`; the time it first held.
    pub(crate) fn run_until_true(
        &mut self,
        deadline: Duration,
        mut done: impl FnMut(&Sim) -> bool,
    ) -> Option<Duration> {
        loop {
            if done(self) {
                return Some(self.now);
            }
            match self.queue.first_key_value() {
                Some(((at, _), _)) if *at <= deadline => {
                    self.step();
                }
                _ => {
                    self.now = deadline;
                    return None;
                }
            }
        }
    }

    /// Processes still running.
    pub(crate) fn running(&self) -> Vec<usize> {
        (0..self.procs.len()).filter(|&i| self.procs[i].running).collect()
    }

    /// Whether `i` sees every other process in `group` up, as the process
    /// running at its address now.
    pub(crate) fn sees_up(&self, i: usize, group: &[usize]) -> bool {
        let view = self.procs[i].engine.members();
        group.iter().filter(|&&j| j != i).all(|&j| {
            let p = &self.procs[j];
            view.iter().any(|m| m.addr == p.addr && m.id == p.id && m.status == MemberStatus::Up)
        })
    }

    /// Whether every process in `group` sees every other one up.
    pub(crate) fn converged(&self, group: &[usize]) -> bool {
        group.iter().all(|&i| self.sees_up(i, group))
    }

    /// The status `i` reports for the member at `addr`.
    pub(crate) fn status(&self, i: usize, addr: SocketAddr) -> Option<MemberStatus> {
        self.procs[i].engine.members().into_iter().find(|m| m.addr == addr).map(|m| m.status)
    }

    /// `i`'s events about the member at `addr`, after `since`.
    pub(crate) fn events_about(&self, i: usize, addr: SocketAddr, since: Duration) -> Vec<(Duration, ClusterEvent)> {
        self.procs[i].events.iter().filter(|(t, e)| *t >= since && subject(e).addr == addr).cloned().collect()
    }
}

impl Sim {
    /// [`check_history`] for every process, running or not.
    pub(crate) fn check_histories(&self) {
        for (i, p) in self.procs.iter().enumerate() {
            if let Err(why) = check_history(&p.events, &p.engine.members(), false) {
                panic!("process {i} ({}): {why}", p.addr);
            }
        }
    }
}
