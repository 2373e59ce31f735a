//! Cluster benchmark W7 (issue #14): how fast members find each other, how
//! fast a dead one is noticed, what the gossip costs at rest, and what a
//! member weighs. Every member is a tether `Node` listening on 127.0.0.1
//! with a cookie, in a `Cluster` with the default `ClusterConfig` (probe
//! every 500 ms, gossip every 200 ms while there is news, suspect timeout
//! 2 s).
//!
//! - **W7-converge-N** (N = 8, 32, 64): N nodes in this process, on one
//!   two-worker tokio runtime, join one after the other from one seed (the
//!   first). Each member's subscription counts the others up; the figure is
//!   the time from the last join's return to the moment the last member's
//!   view has all N-1 others up (`tether`; `member_median`: the median
//!   member). `from_first_join_ms` counts from the first join instead, and
//!   `joins_ms` is how long making and joining the nodes took. Target: 32
//!   nodes in at most 2 s. A member that no gossip about some join reached
//!   learns of it only from the periodic announce (every 15 s) or a probe,
//!   so an unlucky run takes far longer than its median member: compare
//!   `runs_ms` (the full mode makes several runs).
//! - **W7-nodedown**: 7 members in this process and an 8th in a child
//!   process (this binary, run again with `TETHER_BENCH_ROLE` set). Once
//!   all 7 see the child up, it is killed with SIGKILL; the figure is the
//!   time from the kill to the last member's `NodeDown` (`tether`), with
//!   the median member's. Target: at most 5 s.
//! - **W7-gossip-rest-32**: a converged cluster of 32 in this process,
//!   left alone until the news of the joins has died down (`settle_s`),
//!   then the bytes every node sent (`GossipStats::sent_bytes`, whole
//!   datagrams) over `window_s`, per second and per node. Target: at most
//!   1 KB/s per node. `stable` says every view still had all 31 others up
//!   at the end.
//! - **W7-memory-64**: the resident set (`VmRSS`) of this process before
//!   and after forming a converged cluster of 64 in-process nodes, divided
//!   by 64: per member, a node (its supervisor actors, listener, gossip
//!   driver and event buffer) and its TCP listener and UDP socket. The
//!   event buffer is allocated whole (`ClusterConfig::event_buffer` slots,
//!   1,024 by default), about half of the figure. No bound is set; it runs
//!   first, so that the memory freed by the other workloads cannot hide what
//!   the nodes take.
//!
//! There is no raw-TCP baseline for a cluster: each line carries its
//! `target` (null where the issue sets none) and whether it was met.
//!
//! The registry workloads (issue #15) run on members in this process too,
//! each measurement on its own converged cluster, and carry the baseline
//! named in their line, measured in the same run:
//!
//! - **W7-lookup-warm**: `Cluster::lookup` of a name exported on the other
//!   member of a cluster of 2, after its first lookup (the ref is kept):
//!   `tether` is ns per lookup over a run of them; `raw_rtt_us` a raw-TCP
//!   round trip (median); `slower_than_raw_rtt` counts the lookups of a
//!   second, individually timed run that took longer than that round trip
//!   (only those can have crossed the network), beside
//!   `control_slower_than_raw_rtt`, the same count for a loop timing
//!   nothing (what preemption alone makes); `routes_added` is what the runs
//!   added to the node's routes. `no_round_trip`: no route was added, a
//!   lookup takes under a tenth of the round trip on average, and at most
//!   one in 1,000 took as long as one.
//! - **W7-lookup-cold**: the first `Cluster::lookup` of a freshly exported
//!   name on the other member, timed from the moment the name has reached
//!   the looking member (its `watch_name` said so) until the ref is ready:
//!   one route opened, over the connection the registry's own sync already
//!   keeps. Median, p99 and max µs beside the raw-TCP round trip;
//!   `propagation_ms` is the median time from `Node::export` to the name
//!   arriving at the other member (gossip of the version, then a pull).
//! - **W7-group-tell-1** / **W7-group-tell-3**: small messages (u64 + 32
//!   bytes) from one member through `Group::tell` (round robin) to a group
//!   of 1 (of 3) actors on the other member, until the actors have counted
//!   them all, beside `direct`: `RemoteRef::tell` to the same actors (the
//!   same refs, taken in turn for 3). Messages/s; `ratio` is group over
//!   direct; target at least 0.9. The two alternate, which first changing
//!   each round, for 3 rounds (5 in the full mode); each figure is the
//!   median of its rounds.
//! - **W7-idle-cpu-5**: the CPU time (user and system, all threads) this
//!   process spends per second, in ms, while a converged cluster of 5
//!   members in it does nothing, no name exported, over `idle_s`. An idle
//!   cluster should cost next to nothing (gossip a few times a second);
//!   no bound is set.
//! - **W7-broadcast-32**: 32 subscribers of a topic, 8 actors on each of 4
//!   members, and a publisher on a fifth member (so every delivery crosses
//!   a connection). `tether` is deliveries/s while `Topic::publish` runs
//!   back to back until every subscriber has all; `publish_us` the mean
//!   time of one publish call (queued to all 32); `latency` the time from a
//!   publish to its 32nd delivery, one broadcast at a time (µs), beside
//!   the raw-TCP round trip.
//!
//! Output: one JSON object per workload on stdout, progress on stderr.
//!
//! ```text
//! cargo bench --bench cluster                  # more runs, a 10 s rest window
//! cargo bench --bench cluster -- --quick       # one run each, under a minute
//! cargo bench --bench cluster -- W7-converge   # only workloads whose name starts so
//! ```
//!
//! Each measurement has a deadline; a hang becomes an `"error"` field naming
//! the stage it reached, instead of a stuck process.

// The cluster workloads use the harness, not the raw-TCP helpers.
#[allow(dead_code, unused_imports)]
mod common;

use std::collections::HashSet;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{errors_field, json_str, raw_rtt, Bench, Lat, Progress, Res, Small};
use tether::cluster::{
    Cluster, ClusterConfig, ClusterError, ClusterEvent, GossipStats, GroupEvent, MemberStatus, NameEvent,
};
use tether::{Config, Cookie, Mailbox, Node, RemoteRef};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};

const BENCH: Bench = Bench { tag: "cluster", tether_only_env: false };

/// Set in the child process of W7-nodedown; its value is the seed's address.
const ROLE: &str = "TETHER_BENCH_ROLE";
/// Every member's cookie: gossip is authenticated, as in production.
const COOKIE: [u8; 32] = [7; 32];
/// In-process members of W7-nodedown (the child is one more).
const OBSERVERS: usize = 7;

// ---------------------------------------------------------------------------------------------
// Sizes and output
// ---------------------------------------------------------------------------------------------

struct Sizes {
    /// Runs of each W7-converge-N and of W7-nodedown.
    runs: usize,
    /// W7-lookup: warm lookups per timed run, fresh names looked up cold.
    warm: usize,
    cold: usize,
    /// W7-group-tell: messages per run; rounds of (direct, group).
    tells: u64,
    rounds: usize,
    /// W7-broadcast: publishes back to back, then one at a time.
    broadcasts: u64,
    sequential: usize,
    /// Raw-TCP round trips beside the registry workloads.
    rtts: usize,
    /// W7-gossip-rest: wait after convergence, then the measured window. A
    /// member announces every second for its first ten announces after it
    /// joins (the engine's joining pace), so the wait covers those: at rest
    /// means after them.
    settle: Duration,
    window: Duration,
    deadline: Duration,
}

impl Sizes {
    fn full() -> Self {
        Sizes {
            runs: 3,
            warm: 1_000_000,
            cold: 500,
            tells: 1_000_000,
            rounds: 5,
            broadcasts: 20_000,
            sequential: 2_000,
            rtts: 20_000,
            settle: Duration::from_secs(15),
            window: Duration::from_secs(10),
            deadline: Duration::from_secs(60),
        }
    }

    fn quick() -> Self {
        Sizes {
            runs: 1,
            warm: 200_000,
            cold: 100,
            tells: 200_000,
            rounds: 3,
            broadcasts: 5_000,
            sequential: 500,
            rtts: 5_000,
            settle: Duration::from_secs(12),
            window: Duration::from_secs(5),
            deadline: Duration::from_secs(30),
        }
    }
}

/// One line: `r` is the figure in `unit` (`tether`) and more fields, each
/// starting with `,`; beside it its target (if any) and whether it was met.
fn print(workload: &str, unit: &str, r: &Res<(f64, String)>, target: Option<f64>, target_of: &str) {
    let figure = r.as_ref().ok().map(|(v, _)| *v);
    let num = |v: Option<f64>| v.map_or("null".into(), |v| format!("{v:.1}"));
    let met = match (figure, target) {
        (Some(v), Some(t)) => (v <= t).to_string(),
        _ => "null".into(),
    };
    println!(
        "{{\"workload\":\"{workload}\",\"unit\":\"{unit}\",\"tether\":{},\"target\":{},\"meets_target\":{met},\
         \"target_of\":{}{}{}}}",
        num(figure),
        num(target),
        json_str(target_of),
        r.as_ref().map(|(_, extra)| extra.as_str()).unwrap_or_default(),
        errors_field(&[("tether", r.as_ref().err())])
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The median of `v` (sorted here), or 0 for none.
fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

// ---------------------------------------------------------------------------------------------
// Members
// ---------------------------------------------------------------------------------------------

/// A node listening on 127.0.0.1 and joined to the cluster through `seed`
/// (none for the first). Its gossip takes the UDP port of the TCP port the
/// kernel chose; if some other socket holds that one, it tries again.
async fn member(name: &str, seed: Option<SocketAddr>) -> Res<(Node, Cluster)> {
    let mut cfg = Config::default();
    cfg.cookie = Some(Cookie::new(COOKIE));
    let cc = seed.into_iter().fold(ClusterConfig::default(), ClusterConfig::seed);
    let mut taken = 0;
    loop {
        let node = Node::new(Some(name), cfg.clone()).map_err(|e| format!("node: {e}"))?;
        let addr = node.listen("127.0.0.1:0").await.map_err(|e| format!("listen: {e}"))?;
        match Cluster::join(&node, addr, cc.clone()).await {
            Ok(cluster) => return Ok((node, cluster)),
            Err(e @ ClusterError::Bind { .. }) if taken < 5 => {
                eprintln!("[cluster] {e}; trying another port");
                taken += 1;
                node.shutdown().await;
            }
            Err(e) => return Err(format!("join: {e}")),
        }
    }
}

/// Sends when `cluster`'s view first has `others` members up, as its
/// events tell (the events, not a poll, so the time is when it happened).
fn when_complete(cluster: &Cluster, others: usize, done: UnboundedSender<Res<Instant>>) {
    let mut events = cluster.subscribe();
    tokio::spawn(async move {
        let mut up = HashSet::new();
        let complete = loop {
            if up.len() == others {
                break Ok(Instant::now());
            }
            match events.recv().await {
                Ok(ClusterEvent::NodeUp(m)) => {
                    up.insert(m.id);
                }
                Ok(ClusterEvent::NodeRestarted { old, member }) => {
                    up.remove(&old);
                    up.insert(member.id);
                }
                Ok(ClusterEvent::NodeDown { member, .. } | ClusterEvent::NodeLeft(member)) => {
                    up.remove(&member.id);
                }
                Ok(_) => {}
                Err(e) => break Err(format!("events: {e}")),
            }
        };
        let _ = done.send(complete);
    });
}

/// How one cluster came together.
struct Formed {
    members: Vec<(Node, Cluster)>,
    /// From the last join to each member's complete view, in ms.
    views: Vec<f64>,
    joins: Duration,
}

/// `n` members joined one after the other from the first, and converged.
async fn form(n: usize, p: &Progress) -> Res<Formed> {
    p.stage("joining");
    let (done, mut complete) = unbounded_channel();
    let first = Instant::now();
    let seed = member("m0", None).await?;
    let seed_addr = seed.1.me().addr;
    when_complete(&seed.1, n - 1, done.clone());
    let mut members = vec![seed];
    for i in 1..n {
        let m = member(&format!("m{i}"), Some(seed_addr)).await?;
        when_complete(&m.1, n - 1, done.clone());
        members.push(m);
        p.sent();
    }
    let joined = Instant::now();
    drop(done);
    p.stage("converging");
    let mut views = Vec::with_capacity(n);
    while let Some(at) = complete.recv().await {
        views.push(ms(at?.saturating_duration_since(joined)));
        p.received();
    }
    if views.len() != n {
        return Err(format!("{} of {n} views completed", views.len()));
    }
    Ok(Formed { members, views, joins: joined - first })
}

// ---------------------------------------------------------------------------------------------
// Workloads
// ---------------------------------------------------------------------------------------------

/// W7-converge-N, one run: (last member's view, median member's view,
/// from the first join), in ms.
async fn converge(n: usize, p: Arc<Progress>) -> Res<(f64, f64, f64, f64)> {
    let mut formed = form(n, &p).await?;
    let last = formed.views.iter().copied().fold(0.0, f64::max);
    let joins = ms(formed.joins);
    Ok((last, median(&mut formed.views), last + joins, joins))
}

/// W7-nodedown, one run: from the kill to each observer's `NodeDown`, in ms.
async fn node_down(p: Arc<Progress>) -> Res<Vec<f64>> {
    let formed = form(OBSERVERS, &p).await?;
    let seed = formed.members[0].1.me().addr;
    p.stage("starting the child");
    let mut child = tokio::process::Command::new(std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?)
        .env(ROLE, seed.to_string())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("spawn: {e}"))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let line = BufReader::new(stdout).lines().next_line().await.map_err(|e| format!("child's stdout: {e}"))?;
    let child_addr: SocketAddr = line.ok_or("the child exited")?.parse().map_err(|e| format!("child said: {e}"))?;

    // Each observer: up, then down.
    let (up_tx, mut up_rx) = unbounded_channel();
    let (down_tx, mut down_rx) = unbounded_channel();
    for (_, cluster) in &formed.members {
        let mut events = cluster.subscribe();
        let (up_tx, down_tx) = (up_tx.clone(), down_tx.clone());
        tokio::spawn(async move {
            let mut child = None;
            let down = loop {
                match events.recv().await {
                    Ok(ClusterEvent::NodeUp(m)) if m.addr == child_addr => {
                        child = Some(m.id);
                        let _ = up_tx.send(());
                    }
                    Ok(ClusterEvent::NodeDown { member, .. }) if Some(member.id) == child => break Ok(Instant::now()),
                    Ok(ClusterEvent::NodeLeft(member)) if Some(member.id) == child => {
                        break Err("the child left".into())
                    }
                    Ok(_) => {}
                    Err(e) => break Err(format!("events: {e}")),
                }
            };
            let _ = down_tx.send(down);
        });
    }
    drop((up_tx, down_tx));
    p.stage("waiting for all to see the child up");
    for _ in 0..OBSERVERS {
        up_rx.recv().await.ok_or("an observer ended before the child was up")?;
        p.sent();
    }
    p.stage("waiting for all to see the child down");
    let killed = Instant::now();
    child.start_kill().map_err(|e| format!("kill: {e}"))?;
    let mut downs = Vec::with_capacity(OBSERVERS);
    while let Some(at) = down_rx.recv().await {
        downs.push(ms(at?.saturating_duration_since(killed)));
        p.received();
    }
    child.wait().await.map_err(|e| format!("reaping the child: {e}"))?;
    drop(formed);
    Ok(downs)
}

/// Gossip counters summed over `members`.
fn total(members: &[(Node, Cluster)]) -> GossipStats {
    members.iter().map(|(_, c)| c.stats()).fold(GossipStats::default(), |mut t, s| {
        t.sent += s.sent;
        t.sent_bytes += s.sent_bytes;
        t.received_bytes += s.received_bytes;
        t.rejected += s.rejected;
        t
    })
}

/// W7-gossip-rest-N: (bytes sent/s/node, datagrams sent/s/node, bytes
/// received/s/node, datagrams rejected, every view still complete).
async fn gossip_at_rest(n: usize, s: (Duration, Duration), p: Arc<Progress>) -> Res<(f64, f64, f64, u64, bool)> {
    let (settle, window) = s;
    let formed = form(n, &p).await?;
    p.stage("settling");
    tokio::time::sleep(settle).await;
    p.stage("measuring");
    let (before, t0) = (total(&formed.members), Instant::now());
    tokio::time::sleep(window).await;
    let (after, secs) = (total(&formed.members), t0.elapsed().as_secs_f64());
    let stable = formed
        .members
        .iter()
        .all(|(_, c)| c.members().iter().filter(|m| m.status == MemberStatus::Up).count() == n - 1);
    let per = |a: u64, b: u64| (a - b) as f64 / secs / n as f64;
    Ok((
        per(after.sent_bytes, before.sent_bytes),
        per(after.sent, before.sent),
        per(after.received_bytes, before.received_bytes),
        after.rejected - before.rejected,
        stable,
    ))
}

/// This process's resident set in KiB.
fn rss_kib() -> Res<u64> {
    let status = std::fs::read_to_string("/proc/self/status").map_err(|e| format!("/proc/self/status: {e}"))?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).ok_or("no VmRSS")?;
    line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).ok_or_else(|| format!("unreadable: {line}"))
}

/// W7-memory-N: (KiB per member, RSS before, RSS after).
async fn memory(n: usize, p: Arc<Progress>) -> Res<(f64, u64, u64)> {
    let before = rss_kib()?;
    let formed = form(n, &p).await?;
    let after = rss_kib()?;
    drop(formed);
    Ok((after.saturating_sub(before) as f64 / n as f64, before, after))
}

// ---------------------------------------------------------------------------------------------
// Registry workloads: lookups, group sends, broadcast
// ---------------------------------------------------------------------------------------------

/// What the counting actors of one measurement have received, all together; each actor checks
/// that the numbers it gets rise (one sender numbers them).
#[derive(Default)]
struct Sink {
    received: AtomicU64,
    /// Rising numbers that came in lower than an earlier one.
    misordered: AtomicU64,
    /// `received` to wake [`Sink::reach`] at.
    target: AtomicU64,
    done: tokio::sync::Notify,
}

impl Sink {
    /// Waits until `n` messages arrived in all.
    async fn reach(&self, n: u64) {
        self.target.store(n, Ordering::SeqCst);
        while self.received.load(Ordering::SeqCst) < n {
            // `notify_one` keeps a permit for a waiter that comes late.
            self.done.notified().await;
        }
    }

    fn check(&self, want: u64) -> Res<()> {
        let (got, mis) = (self.received.load(Ordering::SeqCst), self.misordered.load(Ordering::SeqCst));
        if got != want {
            return Err(format!("the actors got {got} messages, expected {want}"));
        }
        if mis != 0 {
            return Err(format!("{mis} messages out of order"));
        }
        Ok(())
    }
}

/// A counting actor: the node hands it each message on the route's pump, which is all it does.
struct Counter {
    sink: Arc<Sink>,
    /// One more than the last number seen; 0 for none.
    next: AtomicU64,
}

impl Counter {
    fn new(sink: &Arc<Sink>) -> Counter {
        Counter { sink: sink.clone(), next: AtomicU64::new(0) }
    }
}

impl Mailbox<Small> for Counter {
    fn deliver(&self, msg: Small) -> Result<(), Small> {
        if msg.seq < self.next.swap(msg.seq + 1, Ordering::Relaxed) {
            self.sink.misordered.fetch_add(1, Ordering::Relaxed);
        }
        let got = self.sink.received.fetch_add(1, Ordering::SeqCst) + 1;
        if got == self.sink.target.load(Ordering::SeqCst) {
            self.sink.done.notify_one();
        }
        Ok(())
    }

    fn stopped(&self) -> futures::future::BoxFuture<'static, ()> {
        Box::pin(std::future::pending())
    }
}

/// Waits until `name` has a holder as `cluster` sees it.
async fn arrived(cluster: &Cluster, name: &str) -> Res<()> {
    match cluster.watch_name(name).recv().await {
        Ok(NameEvent::Registered(_)) => Ok(()),
        other => Err(format!("watching {name:?}: {other:?}")),
    }
}

/// Waits until `cluster` sees `n` members in `group`.
async fn group_of(cluster: &Cluster, group: &str, n: usize) -> Res<()> {
    let mut watch = cluster.watch_group(group);
    let mut members = HashSet::new();
    while members.len() < n {
        match watch.recv().await {
            Ok(GroupEvent::Joined(a)) => members.insert(a),
            Ok(GroupEvent::Left(a)) => members.remove(&a),
            other => return Err(format!("watching group {group:?}: {other:?}")),
        };
    }
    Ok(())
}

/// W7-lookup-warm and W7-lookup-cold.
struct Lookups {
    /// Warm: ns per lookup; lookups of the timed run slower than the raw round trip; routes the
    /// warm runs added.
    warm_ns: f64,
    slower: usize,
    /// The same count for a loop timing nothing.
    control: usize,
    warm_max_us: f64,
    routes_added: isize,
    cold: Lat,
    first_cold_us: f64,
    propagation_ms: f64,
    raw: Lat,
}

async fn lookups(warm: usize, cold: usize, rtts: usize, p: Arc<Progress>) -> Res<Lookups> {
    let formed = form(2, &p).await?;
    let [(_, a), (b_node, _)] = &formed.members[..] else { return Err("two members".into()) };
    p.stage("raw round trips");
    let raw = raw_rtt(rtts, p.clone()).await?;

    // Cold: a fresh name each time, timed from its arrival here.
    p.stage("cold lookups");
    let sink = Arc::new(Sink::default());
    let (mut samples, mut propagation) = (Vec::with_capacity(cold), Vec::with_capacity(cold));
    for i in 0..cold {
        let name = format!("cold-{i}");
        let exported = Instant::now();
        b_node.export(Some(&name), Counter::new(&sink)).map_err(|e| format!("export: {e}"))?;
        arrived(a, &name).await?;
        propagation.push(ms(exported.elapsed()));
        let t = Instant::now();
        let r: RemoteRef<Small> = a.lookup(&name).await.map_err(|e| format!("cold lookup of {name}: {e}"))?;
        samples.push(t.elapsed().as_nanos() as u64);
        std::hint::black_box(r);
        p.sent();
    }
    let first_cold_us = samples[0] as f64 / 1e3;
    let mut slowest: Vec<(u64, usize)> = samples.iter().copied().zip(0..).collect();
    slowest.sort_unstable_by(|a, b| b.cmp(a));
    let slowest: Vec<String> =
        slowest.iter().take(5).map(|(ns, i)| format!("#{i} {:.0} us", *ns as f64 / 1e3)).collect();
    eprintln!("[cluster] slowest cold lookups: {}", slowest.join(", "));
    let cold = Lat::from_nanos(samples)?;

    // Warm: the same name again and again.
    p.stage("warm lookups");
    b_node.export(Some("warm"), Counter::new(&sink)).map_err(|e| format!("export: {e}"))?;
    arrived(a, "warm").await?;
    let first: RemoteRef<Small> = a.lookup("warm").await.map_err(|e| format!("first lookup: {e}"))?;
    let routes = formed.members[0].0.stats().routes as isize;
    let t = Instant::now();
    for _ in 0..warm {
        let r: RemoteRef<Small> = a.lookup("warm").await.map_err(|e| format!("warm lookup: {e}"))?;
        std::hint::black_box(r);
    }
    let warm_ns = t.elapsed().as_nanos() as f64 / warm as f64;
    // Again, each timed: a lookup that crossed the network took a round trip at least. A loop
    // timing nothing shows how many slow ones the machine makes by itself (preemption).
    let rtt = Duration::from_nanos((raw.median * 1e3) as u64);
    let mut control = 0;
    for _ in 0..warm {
        let t = Instant::now();
        std::hint::black_box(&first);
        control += usize::from(t.elapsed() > rtt);
    }
    let (mut slower, mut max) = (0, Duration::ZERO);
    for _ in 0..warm {
        let t = Instant::now();
        let r: RemoteRef<Small> = a.lookup("warm").await.map_err(|e| format!("warm lookup: {e}"))?;
        let took = t.elapsed();
        if r.id() != first.id() {
            return Err(format!("a warm lookup found {}, not {}", r.id(), first.id()));
        }
        slower += usize::from(took > rtt);
        max = max.max(took);
    }
    let routes_added = formed.members[0].0.stats().routes as isize - routes;
    Ok(Lookups {
        warm_ns,
        slower,
        control,
        warm_max_us: max.as_secs_f64() * 1e6,
        routes_added,
        cold,
        first_cold_us,
        propagation_ms: median(&mut propagation),
        raw,
    })
}

/// W7-group-tell-1 and -3: for 1 member and for 3, the rates of each round, (direct, group).
type Rounds = [[Vec<f64>; 2]; 2];

async fn group_tells(n: u64, rounds: usize, p: Arc<Progress>) -> Res<Rounds> {
    let formed = form(2, &p).await?;
    let [(_, a), (b_node, b)] = &formed.members[..] else { return Err("two members".into()) };
    p.stage("groups");
    let sink = Arc::new(Sink::default());
    for i in 0..3 {
        let r = b_node.export(None, Counter::new(&sink)).map_err(|e| format!("export: {e}"))?;
        if i == 0 {
            b.join_group("one", &r).map_err(|e| format!("join_group: {e}"))?;
        }
        b.join_group("three", &r).map_err(|e| format!("join_group: {e}"))?;
    }
    group_of(a, "one", 1).await?;
    group_of(a, "three", 3).await?;
    let (one, three) = (a.group::<Small>("one"), a.group::<Small>("three"));
    // The refs the groups send through, for the direct sends.
    let refs: Vec<RemoteRef<Small>> = three.members().to_vec();
    let first = one.members().first().cloned().ok_or("group one is empty")?;

    let mut seq = 0u64;
    let mut received = 0u64;
    let mut rates = [[Vec::new(), Vec::new()], [Vec::new(), Vec::new()]];
    for round in 0..rounds {
        for (g, (group, direct)) in [(&one, std::slice::from_ref(&first)), (&three, &refs[..])].into_iter().enumerate()
        {
            // Which goes first alternates, so that drift favours neither.
            let order = if round % 2 == 0 { [false, true] } else { [true, false] };
            for via_group in order {
                p.stage(if via_group { "group tells" } else { "direct tells" });
                let t = Instant::now();
                for i in 0..n {
                    let msg = Small::new(seq + i);
                    if via_group {
                        group.tell(msg).await.map_err(|e| format!("group tell: {e}"))?;
                    } else {
                        let r = &direct[(i % direct.len() as u64) as usize];
                        r.tell(msg).await.map_err(|e| format!("tell: {e}"))?;
                    }
                }
                received += n;
                sink.reach(received).await;
                rates[g][usize::from(via_group)].push(n as f64 / t.elapsed().as_secs_f64());
                seq += n;
                eprintln!(
                    "[cluster] round {round}, group of {}: {} {:.0} msgs/s",
                    direct.len(),
                    if via_group { "group" } else { "direct" },
                    rates[g][usize::from(via_group)].last().unwrap()
                );
            }
        }
    }
    sink.check(received)?;
    Ok(rates)
}

/// W7-broadcast-32.
struct Broadcasts {
    deliveries_per_s: f64,
    publish_us: f64,
    latency: Lat,
    raw: Lat,
}

async fn broadcasts(n: u64, sequential: usize, rtts: usize, p: Arc<Progress>) -> Res<Broadcasts> {
    const HOSTS: usize = 4;
    const PER_HOST: usize = 8;
    const SUBSCRIBERS: usize = HOSTS * PER_HOST;
    let formed = form(HOSTS + 1, &p).await?;
    p.stage("raw round trips");
    let raw = raw_rtt(rtts, p.clone()).await?;
    p.stage("subscribing");
    let sink = Arc::new(Sink::default());
    for (node, cluster) in &formed.members[1..] {
        let topic = cluster.topic::<Small>("bench");
        for _ in 0..PER_HOST {
            let r = node.export(None, Counter::new(&sink)).map_err(|e| format!("export: {e}"))?;
            topic.subscribe(&r).map_err(|e| format!("subscribe: {e}"))?;
        }
    }
    let topic = formed.members[0].1.topic::<Small>("bench");
    // Topics announce no subscriptions: polled, before anything is timed.
    while topic.subscribers().len() < SUBSCRIBERS {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }

    p.stage("broadcasts back to back");
    let publish = |seq: u64| {
        let topic = topic.clone();
        async move {
            let report = topic.publish(Small::new(seq)).await;
            if report.sent != SUBSCRIBERS || !report.failed.is_empty() {
                return Err(format!("publish {seq}: sent to {}, failed {:?}", report.sent, report.failed));
            }
            Ok(())
        }
    };
    let t = Instant::now();
    for seq in 0..n {
        publish(seq).await?;
    }
    let publishing = t.elapsed();
    let mut received = n * SUBSCRIBERS as u64;
    sink.reach(received).await;
    let deliveries_per_s = received as f64 / t.elapsed().as_secs_f64();

    p.stage("broadcasts one at a time");
    let mut samples = Vec::with_capacity(sequential);
    for i in 0..sequential as u64 {
        let t = Instant::now();
        publish(n + i).await?;
        received += SUBSCRIBERS as u64;
        sink.reach(received).await;
        samples.push(t.elapsed().as_nanos() as u64);
    }
    sink.check(received)?;
    Ok(Broadcasts {
        deliveries_per_s,
        publish_us: publishing.as_secs_f64() * 1e6 / n as f64,
        latency: Lat::from_nanos(samples)?,
        raw,
    })
}

/// This process's CPU time so far (user and system, all threads), in ms; `/proc/self/stat`
/// counts it in clock ticks, 100 a second on Linux.
fn cpu_ms() -> Res<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").map_err(|e| format!("/proc/self/stat: {e}"))?;
    // The fields after the command name (which may hold spaces), from the state on: utime and
    // stime are the 12th and 13th.
    let fields: Vec<&str> = stat.rsplit_once(')').ok_or("unreadable /proc/self/stat")?.1.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).ok_or("unreadable /proc/self/stat");
    Ok((ticks(11)? + ticks(12)?) * 10.0)
}

/// W7-idle-cpu-N: CPU ms per second of this process with `n` converged, idle members.
async fn idle_cpu(n: usize, window: Duration, p: Arc<Progress>) -> Res<f64> {
    let formed = form(n, &p).await?;
    p.stage("idle");
    let (before, t) = (cpu_ms()?, Instant::now());
    tokio::time::sleep(window).await;
    let per_s = (cpu_ms()? - before) / t.elapsed().as_secs_f64();
    drop(formed);
    Ok(per_s)
}

/// One line of a registry workload: `fields` are its own (each starting with `,`).
fn print_line(workload: &str, unit: &str, r: &Res<String>) {
    let fields = r.as_ref().map_or(",\"tether\":null", String::as_str);
    println!(
        "{{\"workload\":\"{workload}\",\"unit\":\"{unit}\"{fields}{}}}",
        errors_field(&[("tether", r.as_ref().err())])
    );
}

// ---------------------------------------------------------------------------------------------
// The child of W7-nodedown, and the driver
// ---------------------------------------------------------------------------------------------

/// A member joined through the seed in `ROLE`; prints its address, then
/// lives until killed or until its stdin closes (the bench is gone).
fn child(seed: &str) -> Res<()> {
    let seed = seed.parse().map_err(|e| format!("seed {seed:?}: {e}"))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    let (_node, cluster) = rt.block_on(member("child", Some(seed)))?;
    println!("{}", cluster.me().addr);
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    Ok(())
}

fn main() {
    if let Ok(seed) = std::env::var(ROLE) {
        if let Err(e) = child(&seed) {
            eprintln!("[cluster child] {e}");
            std::process::exit(1);
        }
        return;
    }
    let args = BENCH.args();
    let s = if args.quick { Sizes::quick() } else { Sizes::full() };
    let d = s.deadline;

    if args.wanted("W7-memory-64") {
        let r = BENCH.measure("W7-memory-64", d, move |p| memory(64, p)).map(|(per, before, after)| {
            (
                per,
                format!(
                    ",\"nodes\":64,\"rss_before_kib\":{before},\"rss_after_kib\":{after},\"includes\":{}",
                    json_str("per member: a Node (supervisor actors, listener, gossip driver, event buffer), its TCP listener and UDP socket")
                ),
            )
        });
        print("W7-memory-64", "KiB/member", &r, None, "memory per member (no bound set)");
    }

    for n in [8, 32, 64] {
        let name = format!("W7-converge-{n}");
        if !args.wanted(&name) {
            continue;
        }
        let runs: Res<Vec<_>> =
            (0..s.runs).map(|i| BENCH.measure(&format!("{name} run {}", i + 1), d, move |p| converge(n, p))).collect();
        let r = runs.map(|runs| {
            let worst = runs.iter().copied().max_by(|a, b| a.0.total_cmp(&b.0)).expect("at least one run");
            let all: Vec<String> = runs.iter().map(|r| format!("{:.1}", r.0)).collect();
            let (last, member_median, from_first, joins) = worst;
            (
                last,
                format!(
                    ",\"nodes\":{n},\"member_median\":{member_median:.1},\"from_first_join_ms\":{from_first:.1},\
                     \"joins_ms\":{joins:.1},\"runs_ms\":[{}]",
                    all.join(",")
                ),
            )
        });
        let (target, of) = match n {
            32 => (Some(2000.0), "32 nodes converge from one seed in at most 2 s"),
            _ => (None, "none for this size (32 nodes: at most 2 s)"),
        };
        print(&name, "ms", &r, target, of);
    }

    if args.wanted("W7-nodedown") {
        let runs: Res<Vec<Vec<f64>>> =
            (0..s.runs).map(|i| BENCH.measure(&format!("W7-nodedown run {}", i + 1), d, node_down)).collect();
        let r = runs.map(|runs| {
            let mut all: Vec<f64> = runs.concat();
            let last = all.iter().copied().fold(0.0, f64::max);
            let lasts: Vec<String> =
                runs.iter().map(|r| format!("{:.1}", r.iter().copied().fold(0.0, f64::max))).collect();
            (
                last,
                format!(
                    ",\"member_median\":{:.1},\"members\":{},\"observers\":{OBSERVERS},\"runs_ms\":[{}]",
                    median(&mut all),
                    OBSERVERS + 1,
                    lasts.join(",")
                ),
            )
        });
        print("W7-nodedown", "ms", &r, Some(5000.0), "every member reports a kill -9 within 5 s");
    }

    if args.wanted("W7-gossip-rest-32") {
        let times = (s.settle, s.window);
        let r = BENCH.measure("W7-gossip-rest-32", d, move |p| gossip_at_rest(32, times, p)).map(
            |(bytes, datagrams, received, rejected, stable)| {
                (
                    bytes,
                    format!(
                        ",\"nodes\":32,\"settle_s\":{},\"window_s\":{},\"datagrams_per_s_per_node\":{datagrams:.2},\
                         \"received_bytes_per_s_per_node\":{received:.1},\"rejected\":{rejected},\"stable\":{stable}",
                        times.0.as_secs(),
                        times.1.as_secs()
                    ),
                )
            },
        );
        print("W7-gossip-rest-32", "B/s/node", &r, Some(1024.0), "at rest, at most 1 KB/s per node at 32 nodes");
    }

    if args.wanted("W7-lookup") {
        let (warm, cold, rtts) = (s.warm, s.cold, s.rtts);
        let r = BENCH.measure("W7-lookup", d, move |p| lookups(warm, cold, rtts, p));
        let warm_line = r.as_ref().map_err(Clone::clone).map(|l| {
            let raw_ns = l.raw.median * 1e3;
            format!(
                ",\"tether\":{:.1},\"raw_rtt_us\":{:.1},\"ratio_to_raw_rtt\":{},\"lookups\":{warm},\
                 \"slower_than_raw_rtt\":{},\"control_slower_than_raw_rtt\":{},\"max_us\":{:.1},\
                 \"routes_added\":{},\"no_round_trip\":{}",
                l.warm_ns,
                l.raw.median,
                common::ratio(Some(l.warm_ns), Some(raw_ns)),
                l.slower,
                l.control,
                l.warm_max_us,
                l.routes_added,
                l.routes_added == 0 && l.warm_ns * 10.0 < raw_ns && l.slower * 1000 <= warm
            )
        });
        print_line("W7-lookup-warm", "ns/lookup", &warm_line);
        let cold_line = r.map(|l| {
            format!(
                ",\"tether\":{},\"raw\":{},\"ratio\":{},\"raw_of\":{},\"names\":{cold},\"first_us\":{:.1},\
                 \"propagation_ms\":{:.1}",
                l.cold.json(),
                l.raw.json(),
                common::ratio(Some(l.cold.median), Some(l.raw.median)),
                json_str("raw TCP round trip, one small frame each way"),
                l.first_cold_us,
                l.propagation_ms
            )
        });
        print_line("W7-lookup-cold", "us", &cold_line);
    }

    if args.wanted("W7-group-tell") {
        let (n, rounds) = (s.tells, s.rounds);
        let r = BENCH.measure("W7-group-tell", d, move |p| group_tells(n, rounds, p));
        for (i, size) in [1, 3].into_iter().enumerate() {
            let line = r.as_ref().map_err(Clone::clone).map(|rates| {
                let runs = |v: &[f64]| v.iter().map(|r| format!("{r:.0}")).collect::<Vec<_>>().join(",");
                let (runs_direct, runs_group) = (runs(&rates[i][0]), runs(&rates[i][1]));
                let (direct, group) = (median(&mut rates[i][0].clone()), median(&mut rates[i][1].clone()));
                let ratio = group / direct;
                format!(
                    ",\"tether\":{group:.0},\"direct\":{direct:.0},\"ratio\":{},\"direct_of\":{},\"target\":0.9,\
                     \"meets_target\":{},\"msgs\":{n},\"members\":{size},\"runs_group\":[{runs_group}],\
                     \"runs_direct\":[{runs_direct}]",
                    common::ratio(Some(group), Some(direct)),
                    json_str(if size == 1 {
                        "RemoteRef::tell to the same remote actor"
                    } else {
                        "RemoteRef::tell to the same 3 remote actors in turn"
                    }),
                    ratio >= 0.9
                )
            });
            print_line(&format!("W7-group-tell-{size}"), "msgs/s", &line);
        }
    }

    if args.wanted("W7-idle-cpu-5") {
        let window = Duration::from_secs(2);
        let r = BENCH.measure("W7-idle-cpu-5", d, move |p| idle_cpu(5, window, p)).map(|per_s| {
            (per_s, format!(",\"nodes\":5,\"idle_s\":{},\"cores_busy\":{:.2}", window.as_secs(), per_s / 1e3))
        });
        print("W7-idle-cpu-5", "cpu ms/s", &r, None, "an idle cluster of 5, nothing exported (no bound set)");
    }

    if args.wanted("W7-broadcast-32") {
        let (n, sequential, rtts) = (s.broadcasts, s.sequential, s.rtts);
        let r = BENCH.measure("W7-broadcast-32", d, move |p| broadcasts(n, sequential, rtts, p)).map(|b| {
            format!(
                ",\"tether\":{:.0},\"publish_us\":{:.1},\"latency\":{},\"raw\":{},\"latency_ratio\":{},\
                 \"raw_of\":{},\"broadcasts\":{n},\"sequential\":{sequential},\"subscribers\":32,\
                 \"placement\":{}",
                b.deliveries_per_s,
                b.publish_us,
                b.latency.json(),
                b.raw.json(),
                common::ratio(Some(b.latency.median), Some(b.raw.median)),
                json_str("raw TCP round trip, one small frame each way"),
                json_str("publisher on a 5th member; 8 subscriber actors on each of 4 others")
            )
        });
        print_line("W7-broadcast-32", "deliveries/s", &r);
    }
}
