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
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{errors_field, json_str, Bench, Progress, Res};
use tether::cluster::{Cluster, ClusterConfig, ClusterError, ClusterEvent, GossipStats, MemberStatus};
use tether::{Config, Cookie, Node};
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
            settle: Duration::from_secs(15),
            window: Duration::from_secs(10),
            deadline: Duration::from_secs(60),
        }
    }

    fn quick() -> Self {
        Sizes {
            runs: 1,
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
}
