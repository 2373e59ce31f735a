//! Actor benchmark W6 from DESIGN.md ("Benchmarks"): W1 (tell throughput) and W2 (ask round
//! trips) actor to actor, for ractor→ractor, actix→actix and actix→ractor, over TCP on
//! 127.0.0.1 between two tether `Node`s in this process.
//!
//! Arrangement (each measurement gets a fresh tokio runtime and fresh actix Systems):
//!
//! - **tokio**: a multi-threaded runtime with two worker threads, as in `channels.rs`. ractor
//!   actors (`tokio_runtime`) run there, and a ractor-side sender is a plain task there (what
//!   an actor's handler awaiting `send` in a loop amounts to).
//! - **actix**: every actix `System` runs on its own thread (`System::new().run()`); work is
//!   handed to it through its `ArbiterHandle` and run with `actix::spawn` (spawn_local), so the
//!   actix sender loop runs where an actor's `ctx.spawn`ed future would. Each side with actix
//!   actors gets its own System, as if the two nodes were two processes.
//! - **Nodes, headline workloads** (`W6-*-ractor`, `W6-*-actix`, `W6-*-actix-ractor`): each
//!   node runs where its actors run, i.e. on the tokio runtime for ractor and *inside* the
//!   actor's System for actix (a node made in `#[actix::main]`, as tether-actix's docs do):
//!   its listener, its connection driver and the pumps feeding its actors run there.
//! - **Nodes, extra workloads** (`W6-*-actix-beside`, `W6-*-actix-ractor-beside`): both nodes
//!   on the tokio runtime and the actix actors and sender on Systems beside it (supported; see
//!   actors/actix/tests/separate_runtime.rs). Every message then also crosses between a System
//!   thread and a tokio worker.
//! - **One System** (`W6-*-actix-one-system`, extra): actix→actix with both nodes and both
//!   actors in one System, so on one thread, as the standalone raw round trip runs both its
//!   ends on one runtime. Its ask compares with raw TCP on that same thread, interleaved.
//!
//! Each hop between threads that are not both busy is a cross-thread wake-up. On a 2-vCPU VM
//! waking an idle vCPU costs tens of µs, so the round trip between two single-threaded actix
//! Systems is dominated by it, for raw TCP as for tether (`taskset -c 0` shows the cost of the
//! work alone). That is why each ask line compares with a raw-TCP round trip between the same
//! threads as its nodes (below).
//!
//! Throughput (W6-tell-*): `n` small messages (u64 + 32 bytes) told to a remote actor that
//! counts them (and checks their order); timed from the first send until the actor has seen
//! all `n`. The waiting variants are used — ractor `RemoteActorRef::send`, actix
//! `RemoteAddr::tell` — so that the sender's memory stays within the windows (`cast` and
//! `do_send` would queue what finds no room in the node's outbox). Beside each, the *receiving* framework's own local throughput in the same run:
//! ractor `ActorRef::cast` to a local actor, actix `Addr::do_send` to a local actor (both
//! unbounded mailboxes). `ratio` = tether / local. While the remote run goes, a thread samples
//! the sender's `connection(peer).stats().send_queued` every millisecond; its peak is
//! `peak_send_queued` (bytes; a 1 ms sampler can miss shorter peaks).
//!
//! Round trips (W6-ask-*): sequential request/response (ractor `ask` with a tether
//! `ReplyPort`; actix `send` with the handler's result), after a warm-up. The raw-TCP round
//! trip is that of `channels.rs` W2 (tokio, u32 length-prefixed frames, an echo task and an
//! asking task, `TCP_NODELAY`), measured in the same run in two ways:
//!
//! - between the threads of the two nodes (the echo task where node `b` runs, the asking task
//!   where node `a` runs), interleaved with tether's round trips in 20 rounds so that both meet
//!   the same placement of those threads on the CPUs (one thread for `-one-system`). The
//!   headline and `-one-system` lines compare with this one (`raw`, `raw_of`, `ratio` = tether
//!   median / raw median) and give the standalone one beside it (`raw_tokio`,
//!   `ratio_raw_tokio`);
//! - standalone, both ends on the tokio runtime, once before the tether runs. The `-beside`
//!   lines, whose nodes are both on the tokio runtime, compare with this one.
//!
//! `local` is the framework's own local round trip (ractor `call` with `RpcReplyPort`, actix
//! `Addr::send`).
//!
//! Output: one JSON object per workload on stdout, progress on stderr.
//!
//! ```text
//! cargo bench --bench actors                  # full counts
//! cargo bench --bench actors -- --quick       # smaller counts, under a minute
//! cargo bench --bench actors -- W6-tell       # only workloads whose name starts so
//! cargo bench --bench actors -- 'W6-tell-actix$'   # only the workload of that name
//! ```
//!
//! Each measurement has a deadline; a hang becomes an `"error"` field naming the stage it
//! reached and how many messages had been sent and received, instead of a stuck process.

mod common;

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{errors_field, join, json_str, ratio, raw_rtt, sample_rtts, Bench, Lat, Progress, Res, Small, Tally};
use serde::{Deserialize, Serialize};
use tether::{Connection, Node, NodeId, ReplyPort};

const BENCH: Bench = Bench { tag: "actors", tether_only_env: false };

/// What tracing costs: with `TETHER_BENCH_TRACE=1` (and the feature `opentelemetry`), every
/// process-wide span goes to OpenTelemetry (sampled, exported in batches to an exporter that
/// drops them), both nodes propagate trace contexts, and every tell is sent inside one span,
/// so that each delivery is a span of its own on the receiving node.
mod traced {
    /// Whether this run traces.
    pub(crate) fn on() -> bool {
        cfg!(feature = "opentelemetry") && std::env::var_os("TETHER_BENCH_TRACE").is_some_and(|v| v == "1")
    }

    /// The nodes' configuration.
    pub(crate) fn config() -> tether::Config {
        #[allow(unused_mut)]
        let mut cfg = tether::Config::default();
        #[cfg(feature = "opentelemetry")]
        if on() {
            cfg.trace_propagation = Some(tether::trace::TracePropagation::opentelemetry());
        }
        cfg
    }

    /// The span the sends go in (disabled unless tracing).
    pub(crate) fn span() -> tracing::Span {
        if on() {
            tracing::info_span!("bench")
        } else {
            tracing::Span::none()
        }
    }

    /// Installs the subscriber, if tracing.
    pub(crate) fn install() {
        #[cfg(feature = "opentelemetry")]
        if on() {
            use opentelemetry::trace::TracerProvider as _;
            use tracing_subscriber::layer::SubscriberExt;

            #[derive(Debug)]
            struct Drop;
            impl opentelemetry_sdk::trace::SpanExporter for Drop {
                async fn export(
                    &self,
                    _: Vec<opentelemetry_sdk::trace::SpanData>,
                ) -> opentelemetry_sdk::error::OTelSdkResult {
                    Ok(())
                }
            }
            let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().with_batch_exporter(Drop).build();
            let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("bench"));
            tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer)).unwrap();
            std::mem::forget(provider);
        }
    }
}

/// How long a single remote ask may take before it counts as failed.
const ASK_TIMEOUT: Duration = Duration::from_secs(5);
/// In how many rounds the raw round trips are interleaved with tether's (see `remote_ask`).
const ROUNDS: usize = 20;
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

/// What the raw round trip on the tokio runtime is.
const RAW_TOKIO: &str = "raw TCP, both ends on the tokio runtime";

/// One ask line: `raw` is the baseline for the ratio (with what it is); `raw_tokio`, when that
/// baseline is not the tokio one, is added beside it with its own ratio.
fn print_ask(
    workload: &str,
    tether: &Res<Lat>,
    (raw, raw_of): (&Res<Lat>, &str),
    raw_tokio: Option<&Res<Lat>>,
    (local, local_of): (&Res<Lat>, &str),
    threads: &str,
) {
    let lat = Lat::json_or_null;
    let median = |r: &Res<Lat>| r.as_ref().ok().map(|l| l.median);
    let tokio_fields = raw_tokio
        .map(|rt| format!(",\"raw_tokio\":{},\"ratio_raw_tokio\":{}", lat(rt), ratio(median(tether), median(rt))))
        .unwrap_or_default();
    println!(
        "{{\"workload\":\"{workload}\",\"unit\":\"us\",\"tether\":{},\"raw\":{},\"ratio\":{},\"raw_of\":{}{tokio_fields},\
         \"local\":{},\"local_of\":{},\"threads\":{}{}}}",
        lat(tether),
        lat(raw),
        ratio(median(tether), median(raw)),
        json_str(raw_of),
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
                        $msg::Tell(m) => t.saw_seq(m.seq),
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
            self.0.saw_seq(m.seq);
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

/// Where the two nodes run.
#[derive(Clone, Copy, PartialEq)]
enum Placement {
    /// Each node on the runtime of its actors: the tokio runtime for ractor, the actor's actix
    /// System for actix (a node made in `#[actix::main]`, as tether-actix's docs do it).
    WithActors,
    /// Both nodes on the tokio runtime; the actix actors and the actix sender on Systems
    /// beside it (supported; see actors/actix/tests/separate_runtime.rs).
    Beside,
    /// actix→actix only: both nodes and both actors in one actix System, i.e. on one thread, as
    /// the standalone raw round trip has both its ends on one tokio runtime.
    OneSystem,
}

impl Pair {
    fn sender_is_actix(self) -> bool {
        self != Pair::RactorRactor
    }

    fn receiver_is_actix(self) -> bool {
        self == Pair::ActixActix
    }

    /// The workload name after `W6-tell-` / `W6-ask-`.
    fn suffix(self, placement: Placement) -> &'static str {
        match (self, placement) {
            (Pair::RactorRactor, _) => "ractor",
            (Pair::ActixActix, Placement::WithActors) => "actix",
            (Pair::ActixRactor, Placement::WithActors) => "actix-ractor",
            (Pair::ActixActix, Placement::Beside) => "actix-beside",
            (Pair::ActixRactor, Placement::Beside) => "actix-ractor-beside",
            (Pair::ActixActix, Placement::OneSystem) => "actix-one-system",
            (Pair::ActixRactor, Placement::OneSystem) => unreachable!("not measured"),
        }
    }

    fn threads(self, placement: Placement) -> &'static str {
        match (self, placement) {
            (Pair::RactorRactor, _) => "tokio 2 (both nodes)",
            (Pair::ActixActix, Placement::WithActors) => "actix System x2 (a node inside each)",
            (Pair::ActixRactor, Placement::WithActors) => "actix System (node a) + tokio 2 (node b)",
            (Pair::ActixActix, Placement::Beside) => "tokio 2 (both nodes) + actix System x2 (actors)",
            (Pair::ActixRactor, Placement::Beside) => "tokio 2 (both nodes) + actix System (sender)",
            (Pair::ActixActix, Placement::OneSystem) => "actix System x1 (both nodes and actors)",
            (Pair::ActixRactor, Placement::OneSystem) => unreachable!("not measured"),
        }
    }
}

/// The measured arrangements, headline ones first.
const CASES: [(Pair, Placement); 6] = [
    (Pair::RactorRactor, Placement::WithActors),
    (Pair::ActixActix, Placement::WithActors),
    (Pair::ActixRactor, Placement::WithActors),
    (Pair::ActixActix, Placement::Beside),
    (Pair::ActixRactor, Placement::Beside),
    (Pair::ActixActix, Placement::OneSystem),
];

/// The actix Systems a pair needs: (sender side, receiver side). With
/// [`Placement::OneSystem`], the sender's System is the receiver's too.
fn systems(pair: Pair, placement: Placement) -> Res<(Option<SysThread>, Option<SysThread>)> {
    Ok(match pair {
        Pair::RactorRactor => (None, None),
        Pair::ActixActix if placement == Placement::OneSystem => (Some(SysThread::start("actix-ab")?), None),
        Pair::ActixActix => (Some(SysThread::start("actix-a")?), Some(SysThread::start("actix-b")?)),
        Pair::ActixRactor => (Some(SysThread::start("actix-a")?), None),
    })
}

/// Where a piece of work runs: the measurement's tokio runtime, or an actix System.
#[derive(Clone)]
enum Home {
    Tokio,
    System(Ax),
}

impl Home {
    /// Runs `f()` there; its result comes back here.
    async fn run<T, F, Fut>(&self, f: F) -> Res<T>
    where
        T: Send + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Res<T>> + Send + 'static,
    {
        match self {
            Home::Tokio => join(tokio::spawn(f())).await,
            Home::System(ax) => ax.run(f).await,
        }
    }
}

/// One side of a measurement: where its node runs, and where its actor (or its sending loop)
/// runs.
struct Side {
    node: Home,
    actor: Home,
}

/// The two sides (sender, receiver) of `pair` under `placement`, on the Systems that
/// [`systems`] started for it.
fn sides(pair: Pair, placement: Placement, tx: Option<Ax>, rx: Option<Ax>) -> Res<(Side, Side)> {
    let actor_home = |actix: bool, ax: Option<Ax>| -> Res<Home> {
        if actix {
            ax.map(Home::System).ok_or_else(|| "no actix System".to_string())
        } else {
            Ok(Home::Tokio)
        }
    };
    let side =
        |actor: Home| Side { node: if placement == Placement::Beside { Home::Tokio } else { actor.clone() }, actor };
    let rx = if placement == Placement::OneSystem { tx.clone() } else { rx };
    Ok((side(actor_home(pair.sender_is_actix(), tx)?), side(actor_home(pair.receiver_is_actix(), rx)?)))
}

/// Two connected nodes with the counting actor exported on `b` as "counter".
struct Setup {
    a: Node,
    b: Node,
    /// `b`'s id as `a` knows it.
    b_id: NodeId,
    /// The ractor counter, stopped at the end.
    ractor_actor: Option<ractor::ActorRef<rac::RMsg>>,
}

impl Setup {
    async fn new(pair: Pair, a_side: &Side, b_side: &Side, tally: Arc<Tally>, p: &Progress) -> Res<Setup> {
        p.stage("node b: listen");
        let (b, addr) = b_side
            .node
            .run(|| async {
                let b = Node::new(Some("b"), traced::config()).unwrap();
                let addr = b.listen("127.0.0.1:0").await.map_err(|e| format!("listen: {e}"))?;
                Ok((b, addr.to_string()))
            })
            .await?;
        p.stage("export");
        let node = b.clone();
        let ractor_actor = if pair.receiver_is_actix() {
            b_side
                .actor
                .run(move || async move {
                    tether_actix::export(&node, Some("counter"), actix::Actor::start(act::Counter(tally)))
                        .map(|_| None)
                        .map_err(|e| format!("export: {e}"))
                })
                .await?
        } else {
            b_side
                .actor
                .run(move || async move {
                    let actor = rac::spawn_counter(tally).await?;
                    tether_ractor::export(&node, Some("counter"), actor.clone()).map_err(|e| format!("export: {e}"))?;
                    Ok(Some(actor))
                })
                .await?
        };
        p.stage("node a: connect");
        let (a, b_id) = a_side
            .node
            .run(move || async move {
                let a = Node::new(Some("a"), traced::config()).unwrap();
                let b_id = a.connect(&addr).await.map_err(|e| format!("connect: {e:?}"))?;
                Ok((a, b_id))
            })
            .await?;
        Ok(Setup { a, b, b_id, ractor_actor })
    }

    fn finish(self) {
        if let Some(actor) = self.ractor_actor {
            actor.stop(None);
        }
        drop((self.a, self.b));
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
    let sends = async {
        for i in 0..n {
            remote.send(rac::RMsg::Tell(Small::new(i))).await.map_err(|e| format!("send {i}: {e}"))?;
            p.sent();
        }
        Ok::<_, String>(())
    };
    tracing::Instrument::instrument(sends, traced::span()).await?;
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
    let sends = async {
        for i in 0..n {
            remote.tell(act::AMsg(Small::new(i))).await.map_err(|e| format!("tell {i}: {e}"))?;
            p.sent();
        }
        Ok::<_, String>(())
    };
    tracing::Instrument::instrument(sends, traced::span()).await?;
    Ok((sampler, t0))
}

/// A counter on another node, looked up through either adapter.
enum Remote {
    Ractor(tether_ractor::RemoteActorRef<rac::RMsg>),
    Actix(tether_actix::RemoteAddr<act::AMsg>),
}

impl Remote {
    async fn lookup(pair: Pair, a: &Node, b_id: NodeId) -> Res<Remote> {
        Ok(match pair.receiver_is_actix() {
            true => Remote::Actix(actix_counter(a, b_id).await?),
            false => Remote::Ractor(ractor_counter(a, b_id).await?),
        })
    }

    /// Asks with message `i` (ractor `ask` with a tether `ReplyPort`; actix `send` with the
    /// handler's result) and checks the echo; returns the round-trip time.
    async fn ask(&self, i: u64) -> Res<Duration> {
        let t = Instant::now();
        let echoed = match self {
            Remote::Ractor(r) => r
                .ask(|port| rac::RMsg::Ask(Small::new(i), port), ASK_TIMEOUT)
                .await
                .map_err(|e| format!("ask {i}: {e}"))?,
            Remote::Actix(r) => {
                r.send_timeout(act::AMsg(Small::new(i)), ASK_TIMEOUT).await.map_err(|e| format!("send {i}: {e}"))?
            }
        };
        let rtt = t.elapsed();
        if echoed.seq != i {
            return Err("reply out of order".into());
        }
        Ok(rtt)
    }
}

/// W6 tell: `n` tells from node `a` to the counter on node `b`; until it has seen them all.
async fn remote_tell(
    pair: Pair,
    placement: Placement,
    n: u64,
    tx: Option<Ax>,
    rx: Option<Ax>,
    p: Arc<Progress>,
) -> Res<Tell> {
    let (a_side, b_side) = sides(pair, placement, tx, rx)?;
    let tally = Tally::new(n, p.clone());
    let setup = Setup::new(pair, &a_side, &b_side, tally.clone(), &p).await?;
    let conn = setup.a.connection(setup.b_id).ok_or("no connection to b")?;

    p.stage("lookup and tells");
    let (a, b_id, ps) = (setup.a.clone(), setup.b_id, p.clone());
    // Returns when its lookup is done and when its last send was accepted.
    let sender = tokio::spawn(async move {
        a_side
            .actor
            .run(move || async move {
                if pair.receiver_is_actix() {
                    actix_tells(&actix_counter(&a, b_id).await?, conn, n, &ps).await
                } else {
                    ractor_tells(&ractor_counter(&a, b_id).await?, conn, n, &ps).await
                }
            })
            .await
    });
    let (t1, (sampler, t0)) = tally.wait_for_sender(sender).await?;
    let (peak, samples) = sampler.finish();
    tally.check()?;
    setup.finish();
    Ok(Tell { rate: n as f64 / (t1 - t0).as_secs_f64(), peak_send_queued: peak, queue_samples: samples })
}

/// W6 ask: sequential round trips from node `a` to the counter on node `b`, and unless
/// [`Placement::Beside`] raw-TCP round trips between the same two threads (the echo task
/// where node `b` runs, the asking task where node `a` runs), interleaved with them in
/// [`ROUNDS`] rounds so that both meet the same placement of those threads on the CPUs.
/// Returns (tether, raw) round-trip times.
async fn remote_ask(
    pair: Pair,
    placement: Placement,
    n: usize,
    tx: Option<Ax>,
    rx: Option<Ax>,
    p: Arc<Progress>,
) -> Res<(Lat, Option<Res<Lat>>)> {
    let (a_side, b_side) = sides(pair, placement, tx, rx)?;
    let setup = Setup::new(pair, &a_side, &b_side, Tally::new(u64::MAX, p.clone()), &p).await?;
    let echo = if placement != Placement::Beside {
        p.stage("raw echo: listen");
        let (addr_tx, addr_rx) = tokio::sync::oneshot::channel();
        let echo = tokio::spawn(async move {
            b_side
                .node
                .run(move || async move {
                    let listener =
                        tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|e| format!("bind: {e}"))?;
                    let _ = addr_tx.send(listener.local_addr().map_err(|e| format!("local_addr: {e}"))?);
                    let (stream, _) = listener.accept().await.map_err(|e| format!("accept: {e}"))?;
                    stream.set_nodelay(true).map_err(|e| format!("nodelay: {e}"))?;
                    common::raw_echo(stream).await
                })
                .await
        });
        let addr = addr_rx.await.map_err(|_| "the raw echo did not listen".to_string())?;
        Some((echo, addr))
    } else {
        None
    };
    let raw_addr = echo.as_ref().map(|(_, addr)| *addr);

    p.stage("lookup and round trips");
    let (a, b_id, ps) = (setup.a.clone(), setup.b_id, p.clone());
    // `a_side.actor` is where node `a` runs too when the raw round trips are wanted.
    let (tether, mut raw) = a_side
        .actor
        .run(move || async move {
            let remote = Remote::lookup(pair, &a, b_id).await?;
            // The raw side fails on its own: its error becomes the raw baseline's.
            let mut raw = match raw_addr {
                Some(addr) => Some(raw_asker(addr).await.map(|r| (r, Vec::with_capacity(n)))),
                None => None,
            };
            let mut i = 0u64;
            for _ in 0..common::WARMUP_RTT {
                remote.ask(i).await?;
                raw_round_trip(&mut raw, i, false).await;
                i += 1;
            }
            let mut tether = Vec::with_capacity(n);
            let per_round = n.div_ceil(ROUNDS);
            while tether.len() < n {
                for _ in 0..per_round.min(n - tether.len()) {
                    tether.push(remote.ask(i).await?.as_nanos() as u64);
                    ps.sent();
                    i += 1;
                }
                for _ in 0..per_round {
                    match &raw {
                        Some(Ok((_, samples))) if samples.len() < n => raw_round_trip(&mut raw, i, true).await,
                        _ => break,
                    }
                    i += 1;
                }
            }
            Ok((tether, raw.map(|r| r.map(|(_, samples)| samples))))
        })
        .await?;
    if let Some((echo, _)) = echo {
        let echoed = join(echo).await;
        raw = raw.map(|r| r.and_then(|samples| echoed.map(|()| samples)));
    }
    setup.finish();
    Ok((Lat::from_nanos(tether)?, raw.map(|r| r.and_then(Lat::from_nanos))))
}

/// A raw round-trip connection to the echo at `addr`.
async fn raw_asker(addr: std::net::SocketAddr) -> Res<common::RawAsker> {
    let stream = tokio::net::TcpStream::connect(addr).await.map_err(|e| format!("connect: {e}"))?;
    stream.set_nodelay(true).map_err(|e| format!("nodelay: {e}"))?;
    Ok(common::RawAsker::new(stream))
}

/// One raw round trip with message `i`, its time kept if `keep`; a failure replaces the raw
/// side with its error (and ends it).
async fn raw_round_trip(raw: &mut Option<Res<(common::RawAsker, Vec<u64>)>>, i: u64, keep: bool) {
    let Some(Ok((asker, samples))) = raw else { return };
    match asker.round_trip(i).await {
        Ok(rtt) if keep => samples.push(rtt.as_nanos() as u64),
        Ok(_) => {}
        Err(e) => *raw = Some(Err(e)),
    }
}

// ---------------------------------------------------------------------------------------------
// Driver
// ---------------------------------------------------------------------------------------------

/// Runs a measurement that may need actix Systems; they are stopped afterwards, whatever
/// happened (also after a timeout, when their tasks may still be blocked).
fn with_systems<T: Send + 'static, Fut>(
    label: &str,
    d: Duration,
    (pair, placement): (Pair, Placement),
    f: impl FnOnce(Option<Ax>, Option<Ax>, Arc<Progress>) -> Fut,
) -> Res<T>
where
    Fut: Future<Output = Res<T>> + Send + 'static,
{
    let (tx, rx) = systems(pair, placement)?;
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

/// A local baseline, measured only if some of `cases` has an actix receiver (`actix`) or a
/// ractor one (`!actix`).
fn if_receiver<T>(cases: &[(Pair, Placement)], actix: bool, measure: impl FnOnce() -> Res<T>) -> Res<T> {
    if cases.iter().any(|(pair, _)| pair.receiver_is_actix() == actix) {
        measure()
    } else {
        Err("not run".into())
    }
}

fn main() {
    traced::install();
    let args = BENCH.args();
    let s = if args.quick { Sizes::quick() } else { Sizes::full() };
    let d = s.deadline;
    let name = |kind: &str, (pair, placement): (Pair, Placement)| format!("W6-{kind}-{}", pair.suffix(placement));

    // W6 tell: local baselines first (each measured once, used by every case whose receiver
    // runs that framework), then the remote runs.
    let n = s.tell_msgs;
    let tells: Vec<_> = CASES.into_iter().filter(|&c| args.wanted(&name("tell", c))).collect();
    if !tells.is_empty() {
        let ractor_local =
            if_receiver(&tells, false, || BENCH.measure("W6 tell local ractor", d, move |p| rac::local_tell(n, p)));
        let actix_local = if_receiver(&tells, true, || {
            with_local_system("W6 tell local actix", d, move |ax, p| act::local_tell(n, ax, p))
        });
        for (pair, placement) in tells {
            let name = name("tell", (pair, placement));
            let tether = with_systems(&format!("{name} tether"), d, (pair, placement), move |tx, rx, p| {
                remote_tell(pair, placement, n, tx, rx, p)
            });
            let (local, local_of) = match pair.receiver_is_actix() {
                true => (&actix_local, "actix Addr::do_send, local actor"),
                false => (&ractor_local, "ractor ActorRef::cast, local actor"),
            };
            print_tell(&name, local_of, n, &tether, local, pair.threads(placement));
        }
    }

    // W6 ask: the raw round trip on the tokio runtime once, the local baselines once per
    // framework; unless the nodes run beside their actors, `remote_ask` also measures the raw
    // round trip between the nodes' threads, and that is the baseline of the ratio.
    let n = s.ask_rtts;
    let asks: Vec<_> = CASES.into_iter().filter(|&c| args.wanted(&name("ask", c))).collect();
    if !asks.is_empty() {
        let raw_tokio = BENCH.measure("W6 ask raw", d, move |p| raw_rtt(n, p));
        let ractor_local =
            if_receiver(&asks, false, || BENCH.measure("W6 ask local ractor", d, move |p| rac::local_ask(n, p)));
        let actix_local = if_receiver(&asks, true, || {
            with_local_system("W6 ask local actix", d, move |ax, p| act::local_ask(n, ax, p))
        });
        for (pair, placement) in asks {
            let name = name("ask", (pair, placement));
            let tether = with_systems(&format!("{name} tether"), d, (pair, placement), move |tx, rx, p| {
                remote_ask(pair, placement, n, tx, rx, p)
            });
            let (local, local_of) = match pair.receiver_is_actix() {
                true => (&actix_local, "actix Addr::send, local actor"),
                false => (&ractor_local, "ractor ActorRef::call, local actor"),
            };
            let threads = pair.threads(placement);
            let (tether, raw) = match tether {
                Ok((t, raw)) => (Ok(t), raw),
                Err(e) => (Err(e), None),
            };
            match raw {
                Some(raw) => {
                    let raw_of = match placement {
                        Placement::OneSystem => "raw TCP on the thread of both nodes, interleaved with the asks",
                        _ => "raw TCP between the threads of the two nodes, interleaved with the asks",
                    };
                    print_ask(&name, &tether, (&raw, raw_of), Some(&raw_tokio), (local, local_of), threads);
                }
                None => print_ask(&name, &tether, (&raw_tokio, RAW_TOKIO), None, (local, local_of), threads),
            }
        }
    }
}
