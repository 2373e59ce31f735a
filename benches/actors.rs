//! Actor benchmark W6 from DESIGN.md ("Benchmarks"): W1 (tell throughput) and W2 (ask round
//! trips) actor to actor, for ractor→ractor, actix→actix and actix→ractor, over TCP on
//! 127.0.0.1 between two tether `Node`s in this process.
//!
//! Arrangement (the same for every measurement; each gets fresh runtimes):
//!
//! - **tokio**: a fresh multi-threaded runtime with two worker threads, as in `channels.rs`.
//!   Both tether nodes are created, listen and connect on it, so their connection drivers,
//!   accept loops and the per-route pumps that hand decoded messages to an exported actor's
//!   mailbox run on those two workers. ractor actors (`tokio_runtime`) run there too, and the
//!   ractor-side sender is a plain task there (what an actor's handler awaiting `send` in a
//!   loop amounts to).
//! - **actix**: every actix `System` runs on its own thread (`System::new().run()`); work is
//!   handed to it through its `ArbiterHandle` and run with `actix::spawn` (spawn_local), so the
//!   actix sender loop runs where an actor's `ctx.spawn`ed future would. Each node with actix
//!   actors gets its own System, as if the nodes were two processes: actix→actix uses two
//!   Systems (sender side, receiver side), actix→ractor one (sender side), the local actix
//!   baseline one. Handles made inside a System (`export`, `lookup`) run their helper tasks
//!   there (`RemoteAddr`'s outbox pump, ack waiters, the export's stop poll); the connections
//!   stay on the tokio runtime. tether supports nodes on their own runtime beside a System
//!   (see actors/actix/tests/separate_runtime.rs).
//! - **W6-*-actix-insys** (extra): actix→actix with each node created *inside* its System
//!   (listener, driver and actor on System B; driver and sender on System A), i.e. two
//!   single-threaded sides as in two actix processes; no hop between a System and tokio.
//!
//! Each actix hop between threads is a cross-thread wake-up. On a 2-vCPU VM these are either
//! cheap (both threads on one vCPU) or cost tens of µs (waking an idle vCPU), so the actix
//! round trips are bimodal from run to run; `taskset -c 0` makes them stable (and faster).
//!
//! Throughput (W6-tell-*): `n` small messages (u64 + 32 bytes) told to a remote actor that
//! counts them (and checks their order); timed from the first send until the actor has seen
//! all `n`. The waiting variants are used — ractor `RemoteActorRef::send`, actix
//! `RemoteAddr::tell` — because `cast`/`try_send` fail and `do_send` drops when the window
//! is full. Beside each, the *receiving* framework's own local throughput in the same run:
//! ractor `ActorRef::cast` to a local actor, actix `Addr::do_send` to a local actor (both
//! unbounded mailboxes). `ratio` = tether / local. While the remote run goes, a thread samples
//! the sender's `connection(peer).stats().send_queued` every millisecond; its peak is
//! `peak_send_queued` (bytes; a 1 ms sampler can miss shorter peaks).
//!
//! Round trips (W6-ask-*): sequential request/response (ractor `call` with a tether
//! `ReplyPort`; actix `send` with the handler's result), after a warm-up, beside the raw-TCP
//! round trip of `channels.rs` W2 (tokio, u32 length-prefixed frames, one task per side)
//! measured once in the same run. `ratio` = tether median / raw median. `local` is the
//! framework's own local round trip (ractor `call` with `RpcReplyPort`, actix `Addr::send`).
//!
//! Output: one JSON object per workload on stdout, progress on stderr.
//!
//! ```text
//! cargo bench --bench actors                  # full counts
//! cargo bench --bench actors -- --quick       # smaller counts, under a minute
//! cargo bench --bench actors -- W6-tell       # only workloads whose name starts so
//! ```
//!
//! Each measurement has a deadline; a hang becomes an `"error"` field naming the stage it
//! reached and how many messages had been sent and received, instead of a stuck process.

mod common;

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{errors_field, join, json_str, ratio, raw_rtt, sample_rtts, Bench, Lat, Progress, Res, Small};
use serde::{Deserialize, Serialize};
use tether::{Config, Connection, Node, NodeId, ReplyPort};

const BENCH: Bench = Bench { tag: "actors", tether_only_env: false };

/// How long a single remote ask may take before it counts as failed.
const ASK_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the sender's `send_queued` is sampled during a tell run.
const SAMPLE_EVERY: Duration = Duration::from_millis(1);

// ---------------------------------------------------------------------------------------------
// Sizes and results (harness in common/mod.rs, shared with channels.rs)
// ---------------------------------------------------------------------------------------------

struct Sizes {
    tell_msgs: u64,
    ask_rtts: usize,
    deadline: Duration,
}

impl Sizes {
    fn full() -> Self {
        Sizes { tell_msgs: 1_000_000, ask_rtts: 20_000, deadline: Duration::from_secs(120) }
    }

    fn quick() -> Self {
        Sizes { tell_msgs: 100_000, ask_rtts: 2_000, deadline: Duration::from_secs(10) }
    }
}

/// What a remote tell run measured.
struct Tell {
    rate: f64,
    peak_send_queued: usize,
    queue_samples: usize,
}

fn print_tell(workload: &str, local_of: &str, n: u64, tether: &Res<Tell>, local: &Res<f64>, threads: &str) {
    let num = |r: Option<f64>| r.map(|v| format!("{v:.0}")).unwrap_or_else(|| "null".into());
    let t = tether.as_ref().ok();
    println!(
        "{{\"workload\":\"{workload}\",\"unit\":\"msgs/s\",\"tether\":{},\"local\":{},\"ratio\":{},\"local_of\":{},\
         \"msgs\":{n},\"peak_send_queued\":{},\"queue_samples\":{},\"threads\":{}{}}}",
        num(t.map(|t| t.rate)),
        num(local.as_ref().ok().copied()),
        ratio(t.map(|t| t.rate), local.as_ref().ok().copied()),
        json_str(local_of),
        t.map(|t| t.peak_send_queued.to_string()).unwrap_or_else(|| "null".into()),
        t.map(|t| t.queue_samples.to_string()).unwrap_or_else(|| "null".into()),
        json_str(threads),
        errors_field(&[("local", local.as_ref().err()), ("tether", tether.as_ref().err())])
    );
}

fn print_ask(workload: &str, tether: &Res<Lat>, raw: &Res<Lat>, local: &Res<Lat>, local_of: &str, threads: &str) {
    let lat = Lat::json_or_null;
    println!(
        "{{\"workload\":\"{workload}\",\"unit\":\"us\",\"tether\":{},\"raw\":{},\"ratio\":{},\"local\":{},\
         \"local_of\":{},\"threads\":{}{}}}",
        lat(tether),
        lat(raw),
        ratio(tether.as_ref().ok().map(|l| l.median), raw.as_ref().ok().map(|l| l.median)),
        lat(local),
        json_str(local_of),
        json_str(threads),
        errors_field(&[
            ("raw", raw.as_ref().err()),
            ("local", local.as_ref().err()),
            ("tether", tether.as_ref().err())
        ])
    );
}

// ---------------------------------------------------------------------------------------------
// Shared pieces: the count an actor keeps, two nodes, the send-queue sampler, actix Systems
// ---------------------------------------------------------------------------------------------

/// What a counting actor has seen; the measuring side waits on it.
struct Tally {
    target: u64,
    seen: AtomicU64,
    misordered: AtomicU64,
    done_at: Mutex<Option<Instant>>,
    done: tokio::sync::Notify,
    progress: Arc<Progress>,
}

impl Tally {
    fn new(target: u64, progress: Arc<Progress>) -> Arc<Tally> {
        Arc::new(Tally {
            target,
            seen: AtomicU64::new(0),
            misordered: AtomicU64::new(0),
            done_at: Mutex::new(None),
            done: tokio::sync::Notify::new(),
            progress,
        })
    }

    /// Called by the actor for each told message (from one sender, so `seq` should count up).
    fn saw(&self, seq: u64) {
        let n = self.seen.fetch_add(1, Ordering::Relaxed);
        self.progress.received();
        if seq != n {
            self.misordered.fetch_add(1, Ordering::Relaxed);
        }
        if n + 1 == self.target {
            *self.done_at.lock().unwrap() = Some(Instant::now());
            self.done.notify_one();
        }
    }

    /// When the actor saw the last message. (`notify_one` keeps a permit for a late waiter.)
    async fn wait(&self) -> Instant {
        loop {
            if let Some(t) = *self.done_at.lock().unwrap() {
                return t;
            }
            self.done.notified().await;
        }
    }

    fn check(&self) -> Res<()> {
        let (seen, mis) = (self.seen.load(Ordering::Relaxed), self.misordered.load(Ordering::Relaxed));
        if seen != self.target {
            return Err(format!("actor saw {seen} of {}", self.target));
        }
        if mis != 0 {
            return Err(format!("{mis} messages out of order"));
        }
        Ok(())
    }
}

/// Two nodes on the current (tokio) runtime, `a` connected to `b`. Returns `b`'s id as `a`
/// knows it.
async fn node_pair(p: &Progress) -> Res<(Node, Node, NodeId)> {
    p.stage("nodes: listen and connect");
    let a = Node::new(Some("a"), Config::default());
    let b = Node::new(Some("b"), Config::default());
    let addr = b.listen("127.0.0.1:0").await.map_err(|e| format!("listen: {e}"))?;
    let b_id = a.connect(&addr.to_string()).await.map_err(|e| format!("connect: {e:?}"))?;
    Ok((a, b, b_id))
}

/// Samples a connection's `send_queued` from a plain thread until finished (or dropped).
struct QueueSampler {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicUsize>,
    samples: Arc<AtomicUsize>,
}

impl QueueSampler {
    fn start(conn: Connection) -> QueueSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicUsize::new(0));
        let samples = Arc::new(AtomicUsize::new(0));
        let (s, pk, n) = (stop.clone(), peak.clone(), samples.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                pk.fetch_max(conn.stats().send_queued, Ordering::Relaxed);
                n.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(SAMPLE_EVERY);
            }
        });
        QueueSampler { stop, peak, samples }
    }

    fn finish(&self) -> (usize, usize) {
        self.stop.store(true, Ordering::Relaxed);
        (self.peak.load(Ordering::Relaxed), self.samples.load(Ordering::Relaxed))
    }
}

impl Drop for QueueSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// An actix `System` on its own thread. Dropping it stops the System and waits (briefly) for
/// the thread.
struct SysThread {
    sys: actix::System,
    handle: Ax,
    ended: std::sync::mpsc::Receiver<()>,
}

/// Runs work on a [`SysThread`]'s System; cheap to clone and `Send`.
#[derive(Clone)]
struct Ax(actix::ArbiterHandle);

impl SysThread {
    fn start(name: &str) -> Res<SysThread> {
        let (tx, rx) = std::sync::mpsc::channel();
        let (ended_tx, ended) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                let sys = actix::System::new();
                let _ = tx.send((actix::System::current(), actix::Arbiter::current()));
                let _ = sys.run();
                let _ = ended_tx.send(());
            })
            .map_err(|e| format!("spawn System thread: {e}"))?;
        let (sys, arbiter) = rx.recv_timeout(Duration::from_secs(5)).map_err(|e| format!("System start: {e}"))?;
        Ok(SysThread { sys, handle: Ax(arbiter), ended })
    }

    fn ax(&self) -> Ax {
        self.handle.clone()
    }
}

impl Drop for SysThread {
    fn drop(&mut self) {
        self.sys.stop();
        if self.ended.recv_timeout(Duration::from_secs(5)).is_err() {
            eprintln!("[actors] an actix System did not stop within 5 s; its thread is left behind");
        }
    }
}

impl Ax {
    /// Runs `f()` as a local task on the System's thread; its result comes back here.
    async fn run<T, F, Fut>(&self, f: F) -> Res<T>
    where
        T: Send + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Res<T>> + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let spawned = self.0.spawn_fn(move || {
            actix::spawn(async move {
                let _ = tx.send(f().await);
            });
        });
        if !spawned {
            return Err("actix System is gone".into());
        }
        rx.await.map_err(|_| "actix task dropped".to_string())?
    }
}

// ---------------------------------------------------------------------------------------------
// The actors
// ---------------------------------------------------------------------------------------------

mod rac {
    use super::*;
    use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

    /// A remote ractor actor's messages: a tell, and an ask answered through a tether port.
    #[derive(Serialize, Deserialize)]
    pub(super) enum RMsg {
        Tell(Small),
        Ask(Small, ReplyPort<Small>),
    }

    /// The same messages in plain ractor, for the local baseline (ractor's own `RpcReplyPort`).
    pub(super) enum LMsg {
        Tell(Small),
        Ask(Small, RpcReplyPort<Small>),
    }

    /// Implements `Actor` for a counter over `$msg` (an enum with `Tell(Small)` and
    /// `Ask(Small, port)`): counts tells in its `Tally`, echoes asks through the port. A macro
    /// because the two counters differ only in their message type and its reply port.
    macro_rules! counter_actor {
        ($actor:ident, $msg:ident) => {
            impl Actor for $actor {
                type Msg = $msg;
                type State = Arc<Tally>;
                type Arguments = Arc<Tally>;

                async fn pre_start(&self, _: ActorRef<$msg>, t: Arc<Tally>) -> Result<Arc<Tally>, ActorProcessingErr> {
                    Ok(t)
                }

                async fn handle(
                    &self,
                    _: ActorRef<$msg>,
                    msg: $msg,
                    t: &mut Arc<Tally>,
                ) -> Result<(), ActorProcessingErr> {
                    match msg {
                        $msg::Tell(m) => t.saw(m.seq),
                        $msg::Ask(m, reply) => {
                            let _ = reply.send(m);
                        }
                    }
                    Ok(())
                }
            }
        };
    }

    /// Counts tells, echoes asks.
    pub(super) struct Counter;
    counter_actor!(Counter, RMsg);

    /// The same actor in plain ractor, for the local baseline.
    pub(super) struct LocalCounter;
    counter_actor!(LocalCounter, LMsg);

    pub(super) async fn spawn_counter(t: Arc<Tally>) -> Res<ActorRef<RMsg>> {
        Actor::spawn(None, Counter, t).await.map(|(a, _)| a).map_err(|e| format!("spawn: {e}"))
    }

    /// Local baseline: `n` casts from a task to a local actor; until it has seen them all.
    pub(super) async fn local_tell(n: u64, p: Arc<Progress>) -> Res<f64> {
        let tally = Tally::new(n, p.clone());
        let (actor, _) = Actor::spawn(None, LocalCounter, tally.clone()).await.map_err(|e| format!("spawn: {e}"))?;
        p.stage("casts");
        let ps = p.clone();
        let a = actor.clone();
        let send = tokio::spawn(async move {
            let t0 = Instant::now();
            for i in 0..n {
                a.cast(LMsg::Tell(Small::new(i))).map_err(|e| format!("cast {i}: {e}"))?;
                ps.sent();
            }
            Ok(t0)
        });
        let t0 = join(send).await?;
        let t1 = tally.wait().await;
        tally.check()?;
        actor.stop(None);
        Ok(n as f64 / (t1 - t0).as_secs_f64())
    }

    /// Local baseline: sequential `call`s to a local actor.
    pub(super) async fn local_ask(n: usize, p: Arc<Progress>) -> Res<Lat> {
        let tally = Tally::new(u64::MAX, p.clone());
        let (actor, _) = Actor::spawn(None, LocalCounter, tally).await.map_err(|e| format!("spawn: {e}"))?;
        p.stage("calls");
        let samples = sample_rtts!(n, |i| {
            let t = Instant::now();
            let r = actor
                .call(|port| LMsg::Ask(Small::new(i), port), Some(ASK_TIMEOUT))
                .await
                .map_err(|e| format!("call {i}: {e}"))?;
            let rtt = t.elapsed();
            match r {
                ractor::rpc::CallResult::Success(m) if m.seq == i => {}
                ractor::rpc::CallResult::Success(_) => return Err("reply out of order".into()),
                other => return Err(format!("call {i}: {other:?}")),
            }
            p.sent();
            rtt
        });
        actor.stop(None);
        Lat::from_nanos(samples)
    }
}

mod act {
    use super::*;
    use actix::{Actor, Context, Handler, MessageResult};

    /// A remote (or local) actix actor's message; the result echoes it.
    #[derive(actix::Message, Serialize, Deserialize)]
    #[rtype(result = "Small")]
    pub(super) struct AMsg(pub(super) Small);

    /// Counts every message, echoes it as the result.
    pub(super) struct Counter(pub(super) Arc<Tally>);

    impl Actor for Counter {
        type Context = Context<Self>;
    }

    impl Handler<AMsg> for Counter {
        type Result = MessageResult<AMsg>;

        fn handle(&mut self, AMsg(m): AMsg, _: &mut Context<Self>) -> MessageResult<AMsg> {
            self.0.saw(m.seq);
            MessageResult(m)
        }
    }

    /// Local baseline: `n` `do_send`s from a task on the System to an actor on it; until the
    /// actor has seen them all. (The loop never yields, so all `n` are queued first.)
    pub(super) async fn local_tell(n: u64, ax: Ax, p: Arc<Progress>) -> Res<f64> {
        let tally = Tally::new(n, p.clone());
        let t = tally.clone();
        p.stage("do_send");
        let ps = p.clone();
        let t0 = ax
            .run(move || async move {
                let addr = Counter(t).start();
                let t0 = Instant::now();
                for i in 0..n {
                    addr.do_send(AMsg(Small::new(i)));
                    ps.sent();
                }
                Ok(t0)
            })
            .await?;
        let t1 = tally.wait().await;
        tally.check()?;
        Ok(n as f64 / (t1 - t0).as_secs_f64())
    }

    /// Local baseline: sequential `send(..).await` on the System.
    pub(super) async fn local_ask(n: usize, ax: Ax, p: Arc<Progress>) -> Res<Lat> {
        p.stage("sends");
        ax.run(move || async move {
            let addr = Counter(Tally::new(u64::MAX, p.clone())).start();
            let samples = sample_rtts!(n, |i| {
                let t = Instant::now();
                let m = addr.send(AMsg(Small::new(i))).await.map_err(|e| format!("send {i}: {e}"))?;
                let rtt = t.elapsed();
                if m.seq != i {
                    return Err("reply out of order".into());
                }
                p.sent();
                rtt
            });
            Lat::from_nanos(samples)
        })
        .await
    }

    /// Starts a counter on `ax`'s System and exports it on `node` as "counter".
    pub(super) async fn export_counter(node: &Node, ax: &Ax, tally: Arc<Tally>) -> Res<()> {
        let node = node.clone();
        ax.run(move || async move {
            tether_actix::export(&node, Some("counter"), Counter(tally).start())
                .map(drop)
                .map_err(|e| format!("export: {e}"))
        })
        .await
    }
}

// ---------------------------------------------------------------------------------------------
// W6 workloads
// ---------------------------------------------------------------------------------------------

/// Which side runs which framework.
#[derive(Clone, Copy, PartialEq)]
enum Pair {
    RactorRactor,
    ActixActix,
    ActixRactor,
}

impl Pair {
    fn suffix(self) -> &'static str {
        match self {
            Pair::RactorRactor => "ractor",
            Pair::ActixActix => "actix",
            Pair::ActixRactor => "actix-ractor",
        }
    }

    fn threads(self) -> &'static str {
        match self {
            Pair::RactorRactor => "tokio 2",
            Pair::ActixActix => "tokio 2 + actix System x2",
            Pair::ActixRactor => "tokio 2 + actix System x1",
        }
    }
}

/// The actix Systems a pair needs: (sender side, receiver side).
fn systems(pair: Pair) -> Res<(Option<SysThread>, Option<SysThread>)> {
    Ok(match pair {
        Pair::RactorRactor => (None, None),
        Pair::ActixActix => (Some(SysThread::start("actix-a")?), Some(SysThread::start("actix-b")?)),
        Pair::ActixRactor => (Some(SysThread::start("actix-a")?), None),
    })
}

/// Sets up the receiving actor on `b` (exported as "counter"); for ractor returns its ref, to
/// stop it afterwards.
async fn receiver(
    pair: Pair,
    b: &Node,
    rx_ax: Option<&Ax>,
    tally: Arc<Tally>,
) -> Res<Option<ractor::ActorRef<rac::RMsg>>> {
    match pair {
        Pair::ActixActix => {
            act::export_counter(b, rx_ax.ok_or("no receiver System")?, tally).await?;
            Ok(None)
        }
        Pair::RactorRactor | Pair::ActixRactor => {
            let actor = rac::spawn_counter(tally).await?;
            tether_ractor::export(b, Some("counter"), actor.clone()).map_err(|e| format!("export: {e}"))?;
            Ok(Some(actor))
        }
    }
}

/// The "counter" on `b_id`, looked up as a ractor actor.
async fn ractor_counter(a: &Node, b_id: NodeId) -> Res<tether_ractor::RemoteActorRef<rac::RMsg>> {
    tether_ractor::lookup::<rac::RMsg>(a, b_id, "counter").await.map_err(|e| format!("lookup: {e}"))
}

/// The "counter" on `b_id`, looked up as an actix actor.
async fn actix_counter(a: &Node, b_id: NodeId) -> Res<tether_actix::RemoteAddr<act::AMsg>> {
    tether_actix::lookup::<act::AMsg>(a, b_id, "counter").await.map_err(|e| format!("lookup: {e}"))
}

/// The sending loop of a tell run to a ractor actor: samples `conn`'s send queue meanwhile;
/// returns the sampler and when the first send started.
async fn ractor_tells(
    remote: &tether_ractor::RemoteActorRef<rac::RMsg>,
    conn: Connection,
    n: u64,
    p: &Progress,
) -> Res<(QueueSampler, Instant)> {
    let sampler = QueueSampler::start(conn);
    let t0 = Instant::now();
    for i in 0..n {
        remote.send(rac::RMsg::Tell(Small::new(i))).await.map_err(|e| format!("send {i}: {e}"))?;
        p.sent();
    }
    Ok((sampler, t0))
}

/// The same to an actix actor.
async fn actix_tells(
    remote: &tether_actix::RemoteAddr<act::AMsg>,
    conn: Connection,
    n: u64,
    p: &Progress,
) -> Res<(QueueSampler, Instant)> {
    let sampler = QueueSampler::start(conn);
    let t0 = Instant::now();
    for i in 0..n {
        remote.tell(act::AMsg(Small::new(i))).await.map_err(|e| format!("tell {i}: {e}"))?;
        p.sent();
    }
    Ok((sampler, t0))
}

/// The asking loop of a round-trip run to a ractor actor (`call` with a tether `ReplyPort`).
async fn ractor_asks(remote: &tether_ractor::RemoteActorRef<rac::RMsg>, n: usize, p: &Progress) -> Res<Vec<u64>> {
    Ok(sample_rtts!(n, |i| {
        let t = Instant::now();
        let m = remote
            .call(|port| rac::RMsg::Ask(Small::new(i), port), ASK_TIMEOUT)
            .await
            .map_err(|e| format!("call {i}: {e}"))?;
        let rtt = t.elapsed();
        if m.seq != i {
            return Err("reply out of order".into());
        }
        p.sent();
        rtt
    }))
}

/// The same to an actix actor (`send` with the handler's result).
async fn actix_asks(remote: &tether_actix::RemoteAddr<act::AMsg>, n: usize, p: &Progress) -> Res<Vec<u64>> {
    Ok(sample_rtts!(n, |i| {
        let t = Instant::now();
        let m =
            remote.send_timeout(act::AMsg(Small::new(i)), ASK_TIMEOUT).await.map_err(|e| format!("send {i}: {e}"))?;
        let rtt = t.elapsed();
        if m.seq != i {
            return Err("reply out of order".into());
        }
        p.sent();
        rtt
    }))
}

/// W6 tell: `n` tells from node `a` to the counter on node `b`; until it has seen them all.
async fn remote_tell(pair: Pair, n: u64, tx_ax: Option<Ax>, rx_ax: Option<Ax>, p: Arc<Progress>) -> Res<Tell> {
    let (a, b, b_id) = node_pair(&p).await?;
    let tally = Tally::new(n, p.clone());
    p.stage("export");
    let ractor_actor = receiver(pair, &b, rx_ax.as_ref(), tally.clone()).await?;
    let conn = a.connection(b_id).ok_or("no connection to b")?;

    p.stage("lookup and tells");
    let ps = p.clone();
    // Each sender returns when its lookup is done and when its last send was accepted.
    let sender: tokio::task::JoinHandle<Res<(QueueSampler, Instant)>> = match pair {
        Pair::RactorRactor => tokio::spawn(async move {
            let remote = ractor_counter(&a, b_id).await?;
            ractor_tells(&remote, conn, n, &ps).await
        }),
        Pair::ActixRactor => {
            let ax = tx_ax.ok_or("no sender System")?;
            tokio::spawn(async move {
                ax.run(move || async move {
                    let remote = ractor_counter(&a, b_id).await?;
                    ractor_tells(&remote, conn, n, &ps).await
                })
                .await
            })
        }
        Pair::ActixActix => {
            let ax = tx_ax.ok_or("no sender System")?;
            tokio::spawn(async move {
                ax.run(move || async move {
                    let remote = actix_counter(&a, b_id).await?;
                    actix_tells(&remote, conn, n, &ps).await
                })
                .await
            })
        }
    };
    let t1 = tally.wait().await;
    let (sampler, t0) = join(sender).await?;
    let (peak, samples) = sampler.finish();
    tally.check()?;
    if let Some(actor) = ractor_actor {
        actor.stop(None);
    }
    drop(b);
    Ok(Tell { rate: n as f64 / (t1 - t0).as_secs_f64(), peak_send_queued: peak, queue_samples: samples })
}

/// W6 ask: sequential round trips from node `a` to the counter on node `b`.
async fn remote_ask(pair: Pair, n: usize, tx_ax: Option<Ax>, rx_ax: Option<Ax>, p: Arc<Progress>) -> Res<Lat> {
    let (a, b, b_id) = node_pair(&p).await?;
    let tally = Tally::new(u64::MAX, p.clone());
    p.stage("export");
    let ractor_actor = receiver(pair, &b, rx_ax.as_ref(), tally).await?;

    p.stage("lookup and round trips");
    let ps = p.clone();
    let asker: tokio::task::JoinHandle<Res<Vec<u64>>> = match pair {
        Pair::RactorRactor => tokio::spawn(async move {
            let remote = ractor_counter(&a, b_id).await?;
            ractor_asks(&remote, n, &ps).await
        }),
        Pair::ActixRactor => {
            let ax = tx_ax.ok_or("no sender System")?;
            tokio::spawn(async move {
                ax.run(move || async move {
                    let remote = ractor_counter(&a, b_id).await?;
                    ractor_asks(&remote, n, &ps).await
                })
                .await
            })
        }
        Pair::ActixActix => {
            let ax = tx_ax.ok_or("no sender System")?;
            tokio::spawn(async move {
                ax.run(move || async move {
                    let remote = actix_counter(&a, b_id).await?;
                    actix_asks(&remote, n, &ps).await
                })
                .await
            })
        }
    };
    let samples = join(asker).await?;
    if let Some(actor) = ractor_actor {
        actor.stop(None);
    }
    drop(b);
    Lat::from_nanos(samples)
}

/// Variant of actix→actix with each node *inside* its actix System (node `b`, its listener,
/// driver and the actor on System B; node `a`, its driver and the sender on System A): two
/// single-threaded sides, like two single-threaded actix processes, with no hop between a
/// System and the tokio runtime. Sets up `b`; returns it (kept alive by the caller) and its
/// address.
async fn insys_receiver(rx: &Ax, tally: Arc<Tally>, p: &Progress) -> Res<(Node, String)> {
    p.stage("node b: listen and export (System B)");
    rx.run(move || async move {
        let b = Node::new(Some("b"), Config::default());
        let addr = b.listen("127.0.0.1:0").await.map_err(|e| format!("listen: {e}"))?;
        tether_actix::export(&b, Some("counter"), actix::Actor::start(act::Counter(tally)))
            .map_err(|e| format!("export: {e}"))?;
        Ok((b, addr.to_string()))
    })
    .await
}

/// Node `a` inside System A, connected to `addr`, and a handle to its "counter".
async fn insys_sender(addr: String) -> Res<(Node, tether_actix::RemoteAddr<act::AMsg>, Connection)> {
    let a = Node::new(Some("a"), Config::default());
    let b_id = a.connect(&addr).await.map_err(|e| format!("connect: {e:?}"))?;
    let remote = actix_counter(&a, b_id).await?;
    let conn = a.connection(b_id).ok_or("no connection to b")?;
    Ok((a, remote, conn))
}

/// W6 tell, actix→actix with the nodes inside the Systems (see [`insys_receiver`]).
async fn insys_tell(n: u64, tx: Option<Ax>, rx: Option<Ax>, p: Arc<Progress>) -> Res<Tell> {
    let (tx, rx) = (tx.ok_or("no sender System")?, rx.ok_or("no receiver System")?);
    let tally = Tally::new(n, p.clone());
    let (b, addr) = insys_receiver(&rx, tally.clone(), &p).await?;
    p.stage("connect, lookup and tells (System A)");
    let ps = p.clone();
    let sender = tokio::spawn(async move {
        tx.run(move || async move {
            let (a, remote, conn) = insys_sender(addr).await?;
            let (sampler, t0) = actix_tells(&remote, conn, n, &ps).await?;
            Ok((a, sampler, t0))
        })
        .await
    });
    let t1 = tally.wait().await;
    let (a, sampler, t0) = join(sender).await?;
    let (peak, samples) = sampler.finish();
    tally.check()?;
    drop((a, b));
    Ok(Tell { rate: n as f64 / (t1 - t0).as_secs_f64(), peak_send_queued: peak, queue_samples: samples })
}

/// W6 ask, actix→actix with the nodes inside the Systems (see [`insys_receiver`]).
async fn insys_ask(n: usize, tx: Option<Ax>, rx: Option<Ax>, p: Arc<Progress>) -> Res<Lat> {
    let (tx, rx) = (tx.ok_or("no sender System")?, rx.ok_or("no receiver System")?);
    let (b, addr) = insys_receiver(&rx, Tally::new(u64::MAX, p.clone()), &p).await?;
    p.stage("connect, lookup and round trips (System A)");
    let ps = p.clone();
    let samples = tx
        .run(move || async move {
            let (a, remote, _conn) = insys_sender(addr).await?;
            let samples = actix_asks(&remote, n, &ps).await?;
            drop(a);
            Ok(samples)
        })
        .await?;
    drop(b);
    Lat::from_nanos(samples)
}

// ---------------------------------------------------------------------------------------------
// Driver
// ---------------------------------------------------------------------------------------------

/// Runs a measurement that may need actix Systems; they are stopped afterwards, whatever
/// happened (also after a timeout, when their tasks may still be blocked).
fn with_systems<T: Send + 'static, Fut>(
    label: &str,
    d: Duration,
    pair: Pair,
    f: impl FnOnce(Option<Ax>, Option<Ax>, Arc<Progress>) -> Fut,
) -> Res<T>
where
    Fut: Future<Output = Res<T>> + Send + 'static,
{
    let (tx, rx) = systems(pair)?;
    let (tx_ax, rx_ax) = (tx.as_ref().map(SysThread::ax), rx.as_ref().map(SysThread::ax));
    let out = BENCH.measure(label, d, move |p| f(tx_ax, rx_ax, p));
    drop((tx, rx));
    out
}

/// Runs a local actix baseline on an actix System of its own, stopped afterwards.
fn with_local_system<T: Send + 'static, Fut>(
    label: &str,
    d: Duration,
    f: impl FnOnce(Ax, Arc<Progress>) -> Fut,
) -> Res<T>
where
    Fut: Future<Output = Res<T>> + Send + 'static,
{
    let sys = SysThread::start("actix-local")?;
    let ax = sys.ax();
    BENCH.measure(label, d, move |p| f(ax, p))
}

fn main() {
    let args = BENCH.args();
    let wanted = |name: &str| args.wanted(name);
    let s = if args.quick { Sizes::quick() } else { Sizes::full() };
    let d = s.deadline;
    let pairs = [Pair::RactorRactor, Pair::ActixActix, Pair::ActixRactor];

    // W6 tell: local baselines first (each measured once, used by every pair whose receiver
    // runs that framework), then the remote runs.
    let n = s.tell_msgs;
    let tell_wanted = |pair: Pair| wanted(&format!("W6-tell-{}", pair.suffix()));
    if pairs.iter().any(|&pr| tell_wanted(pr)) || wanted("W6-tell-actix-insys") {
        let need_ractor = tell_wanted(Pair::RactorRactor) || tell_wanted(Pair::ActixRactor);
        let ractor_local = if need_ractor {
            BENCH.measure("W6 tell local ractor", d, move |p| rac::local_tell(n, p))
        } else {
            Err("not run".into())
        };
        let actix_local = if tell_wanted(Pair::ActixActix) || wanted("W6-tell-actix-insys") {
            with_local_system("W6 tell local actix", d, move |ax, p| act::local_tell(n, ax, p))
        } else {
            Err("not run".into())
        };
        for pair in pairs {
            if !tell_wanted(pair) {
                continue;
            }
            let name = format!("W6-tell-{}", pair.suffix());
            let tether =
                with_systems(&format!("{name} tether"), d, pair, move |tx, rx, p| remote_tell(pair, n, tx, rx, p));
            let (local, local_of) = match pair {
                Pair::ActixActix => (&actix_local, "actix Addr::do_send, local actor"),
                _ => (&ractor_local, "ractor ActorRef::cast, local actor"),
            };
            print_tell(&name, local_of, n, &tether, local, pair.threads());
        }
        if wanted("W6-tell-actix-insys") {
            let name = "W6-tell-actix-insys";
            let tether =
                with_systems(&format!("{name} tether"), d, Pair::ActixActix, move |tx, rx, p| insys_tell(n, tx, rx, p));
            let local_of = "actix Addr::do_send, local actor";
            print_tell(name, local_of, n, &tether, &actix_local, "actix System x2 (nodes inside), tokio unused");
        }
    }

    // W6 ask: one raw round-trip baseline and one local baseline per framework.
    let n = s.ask_rtts;
    let ask_wanted = |pair: Pair| wanted(&format!("W6-ask-{}", pair.suffix()));
    if pairs.iter().any(|&pr| ask_wanted(pr)) || wanted("W6-ask-actix-insys") {
        let raw = BENCH.measure("W6 ask raw", d, move |p| raw_rtt(n, p));
        let ractor_local = if ask_wanted(Pair::RactorRactor) || ask_wanted(Pair::ActixRactor) {
            BENCH.measure("W6 ask local ractor", d, move |p| rac::local_ask(n, p))
        } else {
            Err("not run".into())
        };
        let actix_local = if ask_wanted(Pair::ActixActix) || wanted("W6-ask-actix-insys") {
            with_local_system("W6 ask local actix", d, move |ax, p| act::local_ask(n, ax, p))
        } else {
            Err("not run".into())
        };
        for pair in pairs {
            if !ask_wanted(pair) {
                continue;
            }
            let name = format!("W6-ask-{}", pair.suffix());
            let tether =
                with_systems(&format!("{name} tether"), d, pair, move |tx, rx, p| remote_ask(pair, n, tx, rx, p));
            let (local, local_of) = match pair {
                Pair::ActixActix => (&actix_local, "actix Addr::send, local actor"),
                _ => (&ractor_local, "ractor ActorRef::call, local actor"),
            };
            print_ask(&name, &tether, &raw, local, local_of, pair.threads());
        }
        if wanted("W6-ask-actix-insys") {
            let name = "W6-ask-actix-insys";
            let tether =
                with_systems(&format!("{name} tether"), d, Pair::ActixActix, move |tx, rx, p| insys_ask(n, tx, rx, p));
            let local_of = "actix Addr::send, local actor";
            print_ask(name, &tether, &raw, &actix_local, local_of, "actix System x2 (nodes inside), tokio unused");
        }
    }
}
