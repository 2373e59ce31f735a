//! Scale benchmarks W8–W11 from issue 18: what a connection, an export and a route cost in
//! memory, how long a connect takes, fan-in from many nodes, and many actors on one node.
//!
//! - **W8 memory** (bytes; everything in this one process): `W8-conn`, per idle connection end
//!   with 1,000 peers (one server node, 1,000 client `Node`s each connecting to it over loopback
//!   TCP: both ends and the client nodes live here, so the figure is (growth − what the bare
//!   client nodes cost) / 2 per connection); `W8-export`, per exported actor with 100,000
//!   exports (trivial mailbox; the ref `export` returns dropped, and beside it the figure with
//!   it kept); `W8-route`, per cached route: 10,000 remote refs (found by name) told once each
//!   and kept, both ends (the holder's route and channel, the owner's channel and pump task).
//!   Each figure is the growth of the resident set (`/proc/self/statm`) across the step, after a
//!   warm-up of the same step (glibc keeps freed memory and reuses it), and beside it the growth
//!   of live heap bytes counted by this binary's global allocator (`heap`), which does not
//!   depend on the allocator's caching.
//! - **W9 connect** (µs): `Node::connect` on loopback, cookie off (`W9-connect`) and on
//!   (`W9-connect-cookie`): median and p99 over 1,000 connects, each by a fresh client node
//!   (a new TCP connection and handshake), shut down after it.
//! - **W10 fan-in** (msgs/s): 16 sender nodes, each with its own connection, tell one exported
//!   actor; beside raw TCP fan-in: 16 connections of length-prefixed frames whose 16 reading
//!   tasks hand each message to one receiving task. The actor's mailbox is the same kind of
//!   queue into one task, so both end in one task taking every message.
//! - **W11 many actors** (msgs/s): 10,000 actors exported on one node, told 100 small messages
//!   each by one peer, round robin over the actors; beside it the same total told to one
//!   actor (`w1`, a W1-like figure) in the same run, and the peak resident set (VmHWM, reset
//!   before the run through `/proc/self/clear_refs`).
//!
//! Output: one JSON object per workload on stdout, progress on stderr. Each line names its
//! target from the issue (`target`).
//!
//! ```text
//! cargo bench --bench scale                 # full counts
//! cargo bench --bench scale -- --quick      # smaller counts, under a minute
//! cargo bench --bench scale -- W8 W9        # only the named workloads ("W8" includes all three)
//! ```
//!
//! Each measurement has a deadline; a hang becomes an `"error"` field naming the stage it
//! reached and how many messages had been sent and received, instead of a stuck process.

// Only a part of the shared harness is used here.
#[allow(dead_code, unused_imports)]
mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::RAW_BUF;
use common::{
    errors_field, flush, join, json_str, ratio, read_frame, write_frame, Bench, Lat, Progress, Res, Small, Tally,
};
use futures::future::BoxFuture;
use futures::{StreamExt, TryStreamExt};
use tether::{Config, Mailbox, Node, NodeId, RemoteRef};
use tokio::io::{BufReader, BufWriter};

const BENCH: Bench = Bench { tag: "scale", tether_only_env: true };

/// The issue's targets, printed beside the figures.
const TARGET_CONN_END: u64 = 16 * 1024;
const TARGET_EXPORT: u64 = 300;
const TARGET_CONNECT_MEDIAN_US: f64 = 1000.0;
const TARGET_W10_RATIO: f64 = 0.5;
const TARGET_W11_RATIO: f64 = 0.8;

/// W10's senders.
const FAN_IN: usize = 16;
/// How many lookups are in flight at once while a peer collects its refs.
const LOOKUPS_IN_FLIGHT: usize = 32;

// ---------------------------------------------------------------------------------------------
// Memory: the resident set and the live heap
// ---------------------------------------------------------------------------------------------

/// The system allocator, counting live heap bytes while [`HEAP_ON`] is set (only W8 sets it, so
/// the throughput workloads pay one relaxed load per allocation, not a shared counter).
struct Counting;

static HEAP_ON: AtomicBool = AtomicBool::new(false);
static HEAP_LIVE: AtomicI64 = AtomicI64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if HEAP_ON.load(Ordering::Relaxed) {
            HEAP_LIVE.fetch_add(layout.size() as i64, Ordering::Relaxed);
        }
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if HEAP_ON.load(Ordering::Relaxed) {
            HEAP_LIVE.fetch_sub(layout.size() as i64, Ordering::Relaxed);
        }
        // SAFETY: forwarded unchanged to the system allocator, which made `ptr`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if HEAP_ON.load(Ordering::Relaxed) {
            HEAP_LIVE.fetch_add(new_size as i64 - layout.size() as i64, Ordering::Relaxed);
        }
        // SAFETY: forwarded unchanged to the system allocator, which made `ptr`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Resident set now, in bytes (`statm`'s second field, in 4 KiB pages).
fn rss() -> Res<i64> {
    let statm = std::fs::read_to_string("/proc/self/statm").map_err(|e| format!("statm: {e}"))?;
    let pages: i64 = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).ok_or("statm: no resident field")?;
    Ok(pages * 4096)
}

/// Peak resident set (`VmHWM`) in bytes.
fn peak_rss() -> Res<i64> {
    let status = std::fs::read_to_string("/proc/self/status").map_err(|e| format!("status: {e}"))?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).ok_or("status: no VmHWM")?;
    let kib: i64 = line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).ok_or("status: bad VmHWM")?;
    Ok(kib * 1024)
}

/// Resets the peak resident set to the current one (Linux 4.0 and later).
fn reset_peak_rss() -> Res<()> {
    std::fs::write("/proc/self/clear_refs", "5").map_err(|e| format!("clear_refs: {e}"))
}

/// A point to measure memory growth from: resident set and live heap.
struct Mark {
    rss: i64,
    heap: i64,
}

impl Mark {
    fn now() -> Res<Mark> {
        Ok(Mark { rss: rss()?, heap: HEAP_LIVE.load(Ordering::Relaxed) })
    }

    /// Growth since this mark, in bytes: (resident set, live heap).
    fn growth(&self) -> Res<(i64, i64)> {
        let now = Mark::now()?;
        Ok((now.rss - self.rss, now.heap - self.heap))
    }
}

/// Lets the step just measured come to rest before its growth is read. A connection's first
/// ping exchange (`Config::ping_interval`, 1 s by default) sets up what an idle connection keeps
/// from then on, and tasks that end on their own (a route's eager open, a handshake's
/// helpers) free their memory when they are next polled: neither is an event a caller can
/// await, so the step is given a fixed pause just over one ping interval.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(1500)).await;
}

// ---------------------------------------------------------------------------------------------
// Mailboxes
// ---------------------------------------------------------------------------------------------

/// A mailbox that only counts: the cheapest an export can be. Its actor never stops.
struct Idle;

impl Mailbox<Small> for Idle {
    fn deliver(&self, _: Small) -> Result<(), Small> {
        Ok(())
    }
    fn stopped(&self) -> BoxFuture<'static, ()> {
        Box::pin(std::future::pending())
    }
}

/// An actor that checks its messages arrive numbered 0, 1, 2, ... and counts them in a shared
/// [`Tally`] (W8-route, W11).
struct Counter {
    next: AtomicU64,
    tally: Arc<Tally>,
}

impl Counter {
    fn new(tally: &Arc<Tally>) -> Counter {
        Counter { next: AtomicU64::new(0), tally: tally.clone() }
    }
}

impl Mailbox<Small> for Counter {
    fn deliver(&self, m: Small) -> Result<(), Small> {
        // One route per actor here, so its messages come in order.
        let expected = self.next.fetch_add(1, Ordering::Relaxed);
        self.tally.saw(m.seq == expected);
        Ok(())
    }
    fn stopped(&self) -> BoxFuture<'static, ()> {
        Box::pin(std::future::pending())
    }
}

/// An actor's mailbox as a queue into the one task that runs it (W10): what the raw fan-in's
/// reading tasks hand their messages to, too.
struct Queue(tokio::sync::mpsc::UnboundedSender<Small>);

impl Mailbox<Small> for Queue {
    fn deliver(&self, m: Small) -> Result<(), Small> {
        self.0.send(m).map_err(|e| e.0)
    }
    fn stopped(&self) -> BoxFuture<'static, ()> {
        let tx = self.0.clone();
        Box::pin(async move { tx.closed().await })
    }
}

/// The one task taking every fan-in message: checks each sender's order (`seq` is the sender
/// in the high 32 bits, its count in the low) and returns when it has seen `total`.
fn fan_in_receiver(
    mut rx: tokio::sync::mpsc::UnboundedReceiver<Small>,
    senders: usize,
    total: u64,
    p: Arc<Progress>,
) -> tokio::task::JoinHandle<Res<Instant>> {
    tokio::spawn(async move {
        let mut next = vec![0u64; senders];
        for i in 0..total {
            let m = rx.recv().await.ok_or_else(|| format!("queue closed after {i} messages"))?;
            let (from, n) = ((m.seq >> 32) as usize, m.seq & 0xffff_ffff);
            let expected = next.get_mut(from).ok_or_else(|| format!("message from sender {from}"))?;
            if n != *expected {
                return Err(format!("sender {from}: got {n} expected {expected}"));
            }
            *expected += 1;
            p.received();
        }
        Ok(Instant::now())
    })
}

// ---------------------------------------------------------------------------------------------
// Sizes and output
// ---------------------------------------------------------------------------------------------

struct Sizes {
    peers: usize,
    exports: usize,
    routes: usize,
    connects: usize,
    fan_in_per_sender: u64,
    actors: usize,
    per_actor: u64,
    deadline: Duration,
}

impl Sizes {
    fn full() -> Self {
        Sizes {
            peers: 1_000,
            exports: 100_000,
            routes: 10_000,
            connects: 1_000,
            fan_in_per_sender: 100_000,
            actors: 10_000,
            per_actor: 100,
            deadline: Duration::from_secs(120),
        }
    }

    fn quick() -> Self {
        Sizes {
            peers: 200,
            exports: 20_000,
            routes: 2_000,
            connects: 200,
            fan_in_per_sender: 10_000,
            actors: 10_000,
            per_actor: 10,
            deadline: Duration::from_secs(30),
        }
    }
}

fn num(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.0}")).unwrap_or_else(|| "null".into())
}

/// A W8 line: `per` is bytes per item (resident set), `heap` the live heap bytes per item.
fn print_mem(workload: &str, m: &Res<Mem>, target: Option<u64>, what: &str) {
    let ok = m.as_ref().ok();
    let target = target.map(|t| format!(",\"target\":{t}")).unwrap_or_default();
    let extra = ok.map(|m| m.extra.clone()).unwrap_or_default();
    println!(
        "{{\"workload\":\"{workload}\",\"unit\":\"bytes\",\"tether\":{},\"heap\":{},\"count\":{}{target}{extra},\"what\":{}{}}}",
        num(ok.map(|m| m.per)),
        num(ok.map(|m| m.heap)),
        ok.map(|m| m.count.to_string()).unwrap_or_else(|| "null".into()),
        json_str(what),
        errors_field(&[("tether", m.as_ref().err())])
    );
}

/// What a W8 step measured, per item.
struct Mem {
    per: f64,
    heap: f64,
    count: usize,
    /// More fields, each starting with a comma.
    extra: String,
}

fn print_connect(workload: &str, n: usize, tether: &Res<Lat>, what: &str) {
    let met = tether.as_ref().ok().map(|l| l.median <= TARGET_CONNECT_MEDIAN_US);
    println!(
        "{{\"workload\":\"{workload}\",\"unit\":\"us\",\"tether\":{},\"connects\":{n},\"target_median\":{TARGET_CONNECT_MEDIAN_US},\
         \"met\":{},\"how\":{}{}}}",
        Lat::json_or_null(tether),
        met.map(|m| m.to_string()).unwrap_or_else(|| "null".into()),
        json_str(what),
        errors_field(&[("tether", tether.as_ref().err())])
    );
}

// ---------------------------------------------------------------------------------------------
// Shared pieces
// ---------------------------------------------------------------------------------------------

/// A node listening on loopback, and where.
async fn server(cfg: Config) -> Res<(Node, SocketAddr)> {
    let node = Node::new(Some("server"), cfg).map_err(|e| format!("config: {e}"))?;
    let addr = node.listen("127.0.0.1:0").await.map_err(|e| format!("listen: {e}"))?;
    Ok((node, addr))
}

/// A fresh node connected to `addr`, and the id of the node there.
async fn client(addr: SocketAddr, cfg: Config) -> Res<(Node, NodeId)> {
    let node = Node::new(None, cfg).map_err(|e| format!("config: {e}"))?;
    let peer = node.connect(addr).await.map_err(|e| format!("connect: {e}"))?;
    Ok((node, peer))
}

/// Looks up the actors `name(0..n)` on `peer` (a few at a time), in order.
async fn lookup_all(node: &Node, peer: NodeId, n: usize, name: impl Fn(usize) -> String) -> Res<Vec<RemoteRef<Small>>> {
    futures::stream::iter(0..n)
        .map(|i| {
            let name = name(i);
            async move { node.lookup::<Small>(peer, &name).await.map_err(|e| format!("lookup {name}: {e}")) }
        })
        .buffered(LOOKUPS_IN_FLIGHT)
        .try_collect()
        .await
}

// ---------------------------------------------------------------------------------------------
// W8: memory
// ---------------------------------------------------------------------------------------------

/// W8-conn: 10 client nodes connect as a warm-up; then `n` bare client nodes are made (their
/// cost), then `n` more that each connect. Everything stays alive until both are read.
async fn w8_conn(n: usize, p: Arc<Progress>) -> Res<Mem> {
    let mut cfg = Config::default();
    // The warm-up, then all of them: above the default 1,024 only when asked for more.
    cfg.max_connections = cfg.max_connections.max(n as u32 + 64);
    let (server, addr) = server(cfg.clone()).await?;
    p.stage("warm-up connects");
    let mut kept = Vec::with_capacity(2 * n + 10);
    for _ in 0..10 {
        kept.push(client(addr, cfg.clone()).await?.0);
    }
    settle().await;

    p.stage("bare nodes");
    let mark = Mark::now()?;
    for _ in 0..n {
        kept.push(Node::new(None, cfg.clone()).map_err(|e| format!("config: {e}"))?);
    }
    settle().await;
    let (node_rss, node_heap) = mark.growth()?;

    p.stage("connects");
    let mark = Mark::now()?;
    for _ in 0..n {
        kept.push(client(addr, cfg.clone()).await?.0);
        p.sent();
    }
    settle().await;
    let (rss, heap) = mark.growth()?;
    let peers = server.stats().peers;
    if peers != n + 10 {
        return Err(format!("the server holds {peers} peers, expected {}", n + 10));
    }
    let ends = 2.0 * n as f64;
    let per_node = |b: i64| b as f64 / n as f64;
    Ok(Mem {
        per: (rss - node_rss) as f64 / ends,
        heap: (heap - node_heap) as f64 / ends,
        count: n,
        extra: format!(
            ",\"bare_node\":{:.0},\"bare_node_heap\":{:.0},\"pair_with_node\":{:.0},\"pair_with_node_heap\":{:.0}",
            per_node(node_rss),
            per_node(node_heap),
            per_node(rss),
            per_node(heap)
        ),
    })
}

/// W8-export: `n` exports with the ref dropped (what the node keeps), then `n` more with the
/// ref kept; a tenth of that first as a warm-up.
async fn w8_export(n: usize, p: Arc<Progress>) -> Res<Mem> {
    let node = Node::new(Some("exporter"), Config::default()).map_err(|e| format!("config: {e}"))?;
    let export = || node.export(None, Idle).map_err(|e| format!("export: {e}"));
    p.stage("warm-up exports");
    for _ in 0..n / 10 {
        export()?;
    }
    settle().await;

    p.stage("exports, refs dropped");
    let mark = Mark::now()?;
    for _ in 0..n {
        export()?;
        p.sent();
    }
    settle().await;
    let (rss, heap) = mark.growth()?;

    p.stage("exports, refs kept");
    let mut refs = Vec::with_capacity(n);
    let mark = Mark::now()?;
    for _ in 0..n {
        refs.push(export()?);
        p.sent();
    }
    settle().await;
    let (rss_ref, heap_ref) = mark.growth()?;
    if node.stats().exports != n * 2 + n / 10 {
        return Err(format!("{} exports", node.stats().exports));
    }
    Ok(Mem {
        per: rss as f64 / n as f64,
        heap: heap as f64 / n as f64,
        count: n,
        extra: format!(
            ",\"with_ref\":{:.0},\"with_ref_heap\":{:.0}",
            rss_ref as f64 / n as f64,
            heap_ref as f64 / n as f64
        ),
    })
}

/// W8-route: the server exports `n` counting actors (and a tenth more for the warm-up); the
/// client finds each by name and tells it once, keeping the refs.
async fn w8_route(n: usize, p: Arc<Progress>) -> Res<Mem> {
    let warm = n / 10;
    let tally = Tally::new((n + warm) as u64, p.clone());
    let (server, addr) = server(Config::default()).await?;
    p.stage("exports");
    for i in 0..n + warm {
        server.export(Some(&format!("r{i}")), Counter::new(&tally)).map_err(|e| format!("export: {e}"))?;
    }
    let (client, peer) = client(addr, Config::default()).await?;
    let tell_all = |refs: Vec<RemoteRef<Small>>| async move {
        for r in &refs {
            r.tell(Small::new(0)).await.map_err(|e| format!("tell: {e}"))?;
        }
        Ok::<_, String>(refs)
    };

    p.stage("warm-up routes");
    let warm_refs = tell_all(lookup_all(&client, peer, warm, |i| format!("r{}", n + i)).await?).await?;
    settle().await;

    p.stage("routes");
    let mark = Mark::now()?;
    let refs = tell_all(lookup_all(&client, peer, n, |i| format!("r{i}")).await?).await?;
    tally.wait().await;
    settle().await;
    let (rss, heap) = mark.growth()?;
    tally.check()?;
    let routes = client.stats().routes;
    if routes != n + warm {
        return Err(format!("the client holds {routes} routes, expected {}", n + warm));
    }
    drop((refs, warm_refs));
    Ok(Mem { per: rss as f64 / n as f64, heap: heap as f64 / n as f64, count: n, extra: String::new() })
}

// ---------------------------------------------------------------------------------------------
// W9: connect
// ---------------------------------------------------------------------------------------------

/// W9: `n` connects (after 20 unmeasured), each by a fresh client node, shut down after it.
async fn w9_connect(n: usize, cookie: bool, p: Arc<Progress>) -> Res<Lat> {
    let mut cfg = Config::default();
    if cookie {
        cfg.cookie = Some(tether::Cookie::new([7u8; 32]));
    }
    let (server, addr) = server(cfg.clone()).await?;
    p.stage("connects");
    let mut samples = Vec::with_capacity(n);
    for i in 0..n + 20 {
        let node = Node::new(None, cfg.clone()).map_err(|e| format!("config: {e}"))?;
        let t = Instant::now();
        node.connect(addr).await.map_err(|e| format!("connect {i}: {e}"))?;
        let took = t.elapsed();
        if i >= 20 {
            samples.push(took.as_nanos() as u64);
        }
        node.shutdown().await;
        p.sent();
    }
    drop(server);
    Lat::from_nanos(samples)
}

// ---------------------------------------------------------------------------------------------
// W10: fan-in
// ---------------------------------------------------------------------------------------------

/// W10 raw: `FAN_IN` connections into one listener; a reading task per connection hands each
/// message to one receiving task. Returns msgs/s from the first send to the last receipt.
async fn raw_w10(per: u64, p: Arc<Progress>) -> Res<f64> {
    p.stage("connect");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|e| format!("bind: {e}"))?;
    let addr = listener.local_addr().map_err(|e| format!("local_addr: {e}"))?;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let receiver = fan_in_receiver(rx, FAN_IN, per * FAN_IN as u64, p.clone());
    let mut senders = Vec::with_capacity(FAN_IN);
    let mut readers = Vec::with_capacity(FAN_IN);
    for _ in 0..FAN_IN {
        let (dial, accepted) = tokio::join!(tokio::net::TcpStream::connect(addr), listener.accept());
        let dial = dial.map_err(|e| format!("connect: {e}"))?;
        let (accepted, _) = accepted.map_err(|e| format!("accept: {e}"))?;
        for stream in [&dial, &accepted] {
            stream.set_nodelay(true).map_err(|e| format!("nodelay: {e}"))?;
        }
        let tx = tx.clone();
        readers.push(tokio::spawn(async move {
            let mut r = BufReader::with_capacity(RAW_BUF, accepted);
            let mut buf = Vec::new();
            while read_frame(&mut r, &mut buf).await? {
                tx.send(Small::decode(&buf)?).map_err(|_| "receiver gone".to_string())?;
            }
            Ok(())
        }));
        senders.push(dial);
    }
    drop(tx);
    p.stage("transfer");
    let t0 = Instant::now();
    let senders: Vec<_> = senders
        .into_iter()
        .enumerate()
        .map(|(s, stream)| {
            let p = p.clone();
            tokio::spawn(async move {
                let mut w = BufWriter::with_capacity(RAW_BUF, stream);
                for i in 0..per {
                    write_frame(&mut w, &Small::new((s as u64) << 32 | i).encode()).await?;
                    p.sent();
                }
                flush(&mut w).await
            })
        })
        .collect();
    let t1 = join(receiver).await?;
    for s in senders {
        join(s).await?;
    }
    for r in readers {
        join(r).await?;
    }
    Ok((per * FAN_IN as u64) as f64 / (t1 - t0).as_secs_f64())
}

/// W10 tether: `FAN_IN` client nodes find the server's "sink" and tell it `per` messages each.
async fn w10(per: u64, p: Arc<Progress>) -> Res<f64> {
    let (server, addr) = server(Config::default()).await?;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let receiver = fan_in_receiver(rx, FAN_IN, per * FAN_IN as u64, p.clone());
    server.export(Some("sink"), Queue(tx)).map_err(|e| format!("export: {e}"))?;
    p.stage("connect and lookup");
    let mut clients = Vec::with_capacity(FAN_IN);
    for _ in 0..FAN_IN {
        let (node, peer) = client(addr, Config::default()).await?;
        let sink = node.lookup::<Small>(peer, "sink").await.map_err(|e| format!("lookup: {e}"))?;
        clients.push((node, sink));
    }
    p.stage("transfer");
    let t0 = Instant::now();
    let senders: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(s, (node, sink))| {
            let p = p.clone();
            tokio::spawn(async move {
                for i in 0..per {
                    sink.tell(Small::new((s as u64) << 32 | i)).await.map_err(|e| format!("tell {i}: {e}"))?;
                    p.sent();
                }
                Ok(node)
            })
        })
        .collect();
    let t1 = join(receiver).await?;
    let mut nodes = Vec::with_capacity(FAN_IN);
    for s in senders {
        nodes.push(join(s).await?);
    }
    drop((nodes, server));
    Ok((per * FAN_IN as u64) as f64 / (t1 - t0).as_secs_f64())
}

// ---------------------------------------------------------------------------------------------
// W11: many actors
// ---------------------------------------------------------------------------------------------

/// What a W11 run measured.
struct Many {
    rate: f64,
    /// Peak resident set during the run (set up included), and the resident set before it.
    peak: i64,
    before: i64,
}

/// W11: the server exports `actors` counting actors; one client finds them all and tells each
/// `per` messages, round robin over the actors. With `actors == 1` this is the W1-like
/// baseline. Timed from the first tell until every actor has seen all of its messages.
async fn w11(actors: usize, per: u64, p: Arc<Progress>) -> Res<Many> {
    reset_peak_rss()?;
    let before = rss()?;
    let tally = Tally::new(actors as u64 * per, p.clone());
    let (server, addr) = server(Config::default()).await?;
    p.stage("exports");
    for i in 0..actors {
        server.export(Some(&format!("a{i}")), Counter::new(&tally)).map_err(|e| format!("export: {e}"))?;
    }
    let (client, peer) = client(addr, Config::default()).await?;
    p.stage("lookups");
    let refs = lookup_all(&client, peer, actors, |i| format!("a{i}")).await?;
    p.stage("tells");
    let ps = p.clone();
    let sender = tokio::spawn(async move {
        let t0 = Instant::now();
        for round in 0..per {
            for r in &refs {
                r.tell(Small::new(round)).await.map_err(|e| format!("tell {round}: {e}"))?;
                ps.sent();
            }
        }
        Ok((t0, refs))
    });
    let (t1, (t0, refs)) = tally.wait_for_sender(sender).await?;
    tally.check()?;
    let peak = peak_rss()?;
    drop((refs, client, server));
    Ok(Many { rate: (actors as u64 * per) as f64 / (t1 - t0).as_secs_f64(), peak, before })
}

// ---------------------------------------------------------------------------------------------
// Driver
// ---------------------------------------------------------------------------------------------

/// Runs a W8 step with the heap counted.
fn measure_mem(label: &str, d: Duration, f: impl FnOnce(Arc<Progress>) -> BoxFuture<'static, Res<Mem>>) -> Res<Mem> {
    HEAP_ON.store(true, Ordering::Relaxed);
    let out = BENCH.measure(label, d, f);
    HEAP_ON.store(false, Ordering::Relaxed);
    out
}

fn main() {
    let args = BENCH.args();
    let s = if args.quick { Sizes::quick() } else { Sizes::full() };
    let d = s.deadline;

    if args.wanted("W8-conn") {
        let n = s.peers;
        let m = measure_mem("W8-conn tether", d, move |p| Box::pin(w8_conn(n, p)));
        let what = "RSS per idle connection end: (growth with n client nodes connecting to one server, \
                    minus what n bare client nodes cost) / 2n; both ends and the client nodes live in this process";
        print_mem("W8-conn", &m, Some(TARGET_CONN_END), what);
    }
    if args.wanted("W8-export") {
        let n = s.exports;
        let m = measure_mem("W8-export tether", d, move |p| Box::pin(w8_export(n, p)));
        let what = "RSS per exported actor (trivial mailbox), the ref export returns dropped; with_ref: kept";
        print_mem("W8-export", &m, Some(TARGET_EXPORT), what);
    }
    if args.wanted("W8-route") {
        let n = s.routes;
        let m = measure_mem("W8-route tether", d, move |p| Box::pin(w8_route(n, p)));
        let what = "RSS per cached route: a remote ref found by name, told once and kept; both ends in this \
                    process (the holder's route and channel, the owner's channel and pump task)";
        print_mem("W8-route", &m, None, what);
    }
    if args.wanted("W9-connect") {
        let n = s.connects;
        let how = "a fresh client node per connect (new TCP connection and handshake), shut down after it";
        let plain = BENCH.measure("W9-connect tether", d, move |p| w9_connect(n, false, p));
        print_connect("W9-connect", n, &plain, how);
        if args.wanted("W9-connect-cookie") {
            let cookie = BENCH.measure("W9-connect-cookie tether", d, move |p| w9_connect(n, true, p));
            print_connect("W9-connect-cookie", n, &cookie, how);
        }
    }
    if args.wanted("W10") {
        let per = s.fan_in_per_sender;
        let raw = BENCH.measure("W10 raw", d, move |p| raw_w10(per, p));
        let tether = BENCH.measure("W10 tether", d, move |p| w10(per, p));
        let r = ratio(tether.as_ref().ok().copied(), raw.as_ref().ok().copied());
        println!(
            "{{\"workload\":\"W10\",\"unit\":\"msgs/s\",\"tether\":{},\"raw\":{},\"ratio\":{r},\"senders\":{FAN_IN},\
             \"msgs\":{},\"target_ratio\":{TARGET_W10_RATIO}{}}}",
            num(tether.as_ref().ok().copied()),
            num(raw.as_ref().ok().copied()),
            per * FAN_IN as u64,
            errors_field(&[("raw", raw.as_ref().err()), ("tether", tether.as_ref().err())])
        );
    }
    if args.wanted("W11") {
        let (actors, per) = (s.actors, s.per_actor);
        let total = actors as u64 * per;
        let w1 = BENCH.measure("W11 w1 (one actor)", d, move |p| w11(1, total, p));
        let many = BENCH.measure("W11 tether", d, move |p| w11(actors, per, p));
        let rate = |r: &Res<Many>| r.as_ref().ok().map(|m| m.rate);
        let peak = many.as_ref().ok().map(|m| (m.peak as f64, (m.peak - m.before) as f64));
        println!(
            "{{\"workload\":\"W11\",\"unit\":\"msgs/s\",\"tether\":{},\"w1\":{},\"ratio\":{},\"actors\":{actors},\
             \"per_actor\":{per},\"peak_rss\":{},\"peak_rss_growth\":{},\"w1_peak_rss_growth\":{},\
             \"target_ratio\":{TARGET_W11_RATIO}{}}}",
            num(rate(&many)),
            num(rate(&w1)),
            ratio(rate(&many), rate(&w1)),
            num(peak.map(|p| p.0)),
            num(peak.map(|p| p.1)),
            num(w1.as_ref().ok().map(|m| (m.peak - m.before) as f64)),
            errors_field(&[("w1", w1.as_ref().err()), ("tether", many.as_ref().err())])
        );
    }
}
