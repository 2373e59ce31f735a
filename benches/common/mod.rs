//! The harness shared by the `channels` (W1–W5) and `actors` (W6) benchmarks: argument parsing,
//! one measurement per fresh runtime with a deadline and a progress record, latency summaries,
//! the JSON output helpers, and the raw-TCP framing with its request/response baseline.
//!
//! Each benchmark compiles its own copy (`mod common;`) and uses a part of it.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};

/// Buffer size of the raw baseline's reader and writer.
pub const RAW_BUF: usize = 64 * 1024;
/// Round trips run before latency sampling starts, on every side alike.
pub const WARMUP_RTT: usize = 200;

pub type Res<T> = Result<T, String>;

/// The small message: 40 bytes of payload.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Small {
    pub seq: u64,
    pub data: [u8; 32],
}

impl Small {
    pub fn new(seq: u64) -> Self {
        Small { seq, data: [seq as u8; 32] }
    }

    /// The raw baseline's encoding: `seq` little-endian, then `data`.
    pub fn encode(&self) -> [u8; 40] {
        let mut out = [0u8; 40];
        out[..8].copy_from_slice(&self.seq.to_le_bytes());
        out[8..].copy_from_slice(&self.data);
        out
    }

    pub fn decode(b: &[u8]) -> Result<Self, String> {
        if b.len() != 40 {
            return Err(format!("raw frame of {} bytes, expected 40", b.len()));
        }
        let mut data = [0u8; 32];
        data.copy_from_slice(&b[8..]);
        Ok(Small { seq: u64::from_le_bytes(b[..8].try_into().unwrap()), data })
    }
}

// ---------------------------------------------------------------------------------------------
// Arguments and measurements
// ---------------------------------------------------------------------------------------------

/// One benchmark binary's harness settings.
pub struct Bench {
    /// Names the binary in every progress line on stderr: `[tag] ...`.
    pub tag: &'static str,
    /// Whether `TETHER_BENCH_ONLY=tether` skips the measurements labelled `... raw ...`.
    pub tether_only_env: bool,
}

/// The command line: `--quick` and workload-name prefixes.
pub struct Args {
    pub quick: bool,
    filters: Vec<String>,
}

impl Args {
    /// Whether the workload `name` was asked for: no filters, or one is a prefix of it, or
    /// one ending in `$` is all of it (case-insensitive).
    pub fn wanted(&self, name: &str) -> bool {
        let name = name.to_ascii_uppercase();
        self.filters.is_empty()
            || self.filters.iter().any(|f| match f.strip_suffix('$') {
                Some(exact) => name == exact,
                None => name.starts_with(f.as_str()),
            })
    }
}

impl Bench {
    /// Parses the command line and reports the mode on stderr.
    pub fn args(&self) -> Args {
        let mut quick = false;
        let mut filters: Vec<String> = Vec::new();
        for arg in std::env::args().skip(1) {
            if arg == "--quick" {
                quick = true;
            } else if arg.len() >= 2 && (arg.starts_with('W') || arg.starts_with('w')) {
                filters.push(arg.to_ascii_uppercase());
            }
            // Anything else (`--bench` from cargo, libtest flags) is ignored.
        }
        eprintln!("[{}] mode: {}", self.tag, if quick { "quick" } else { "full" });
        // Built with the `metrics` feature, TETHER_BENCH_RECORDER=1 installs a recorder
        // (Prometheus's, without its HTTP listener), so that what the nodes record is stored as
        // it would be in production; without it the facade drops every sample at once.
        #[cfg(feature = "metrics")]
        if std::env::var_os("TETHER_BENCH_RECORDER").is_some() {
            metrics_exporter_prometheus::PrometheusBuilder::new()
                .install_recorder()
                .expect("no recorder installed yet");
            eprintln!("[{}] metrics recorded (Prometheus recorder)", self.tag);
        }
        Args { quick, filters }
    }

    /// Runs one measurement in a fresh two-worker runtime, bounded by `deadline`. The workload
    /// runs as a spawned task so that only the two workers execute it (not the thread in
    /// `block_on`).
    pub fn measure<T, F, Fut>(&self, label: &str, deadline: Duration, f: F) -> Res<T>
    where
        T: Send + 'static,
        F: FnOnce(Arc<Progress>) -> Fut,
        Fut: Future<Output = Res<T>> + Send + 'static,
    {
        let tag = self.tag;
        eprintln!("[{tag}] {label} ...");
        // For profiling tether alone: TETHER_BENCH_ONLY=tether skips the raw runs.
        if self.tether_only_env
            && label.contains(" raw")
            && std::env::var("TETHER_BENCH_ONLY").is_ok_and(|v| v == "tether")
        {
            return Err("skipped (TETHER_BENCH_ONLY=tether)".into());
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| format!("runtime: {e}"))?;
        let progress = Arc::new(Progress::default());
        let fut = f(progress.clone());
        let started = Instant::now();
        let out = rt.block_on(async move {
            match tokio::time::timeout(deadline, tokio::spawn(fut)).await {
                Ok(Ok(r)) => r,
                Ok(Err(join)) => Err(format!("task failed: {join}")),
                Err(_) => Err(format!("timeout after {} s at {}", deadline.as_secs(), progress.describe())),
            }
        });
        // Tasks still blocked after a failure are dropped, not awaited.
        rt.shutdown_background();
        match &out {
            Ok(_) => eprintln!("[{tag}] {label} done in {:.2} s", started.elapsed().as_secs_f64()),
            Err(e) => eprintln!("[{tag}] {label} FAILED: {e}"),
        }
        out
    }
}

/// How far a measurement got; read when it misses its deadline.
///
/// The sender and the receiver each bump their own counter once per message
/// from different threads, so each counter sits on its own cache line: on a
/// shared line every increment would steal the line from the other core, a
/// cost that has nothing to do with what is measured.
#[derive(Default)]
pub struct Progress {
    stage: Mutex<&'static str>,
    sent: Padded,
    received: Padded,
}

/// A counter alone on its cache line (128 bytes: adjacent-line prefetch
/// pairs 64-byte lines on x86).
#[derive(Default)]
#[repr(align(128))]
struct Padded(AtomicU64);

impl Progress {
    pub fn stage(&self, s: &'static str) {
        *self.stage.lock().unwrap() = s;
    }
    pub fn sent(&self) {
        self.sent.0.fetch_add(1, Ordering::Relaxed);
    }
    pub fn received(&self) {
        self.received.0.fetch_add(1, Ordering::Relaxed);
    }
    fn describe(&self) -> String {
        format!(
            "stage '{}', {} sent, {} received",
            self.stage.lock().unwrap(),
            self.sent.0.load(Ordering::Relaxed),
            self.received.0.load(Ordering::Relaxed)
        )
    }
}

/// What the counting actors of a run have seen together; the measuring side waits on it.
/// (actors and scale only)
#[allow(dead_code)]
pub struct Tally {
    target: u64,
    seen: AtomicU64,
    misordered: AtomicU64,
    done_at: Mutex<Option<Instant>>,
    done: tokio::sync::Notify,
    progress: Arc<Progress>,
}

#[allow(dead_code)]
impl Tally {
    pub fn new(target: u64, progress: Arc<Progress>) -> Arc<Tally> {
        Arc::new(Tally {
            target,
            seen: AtomicU64::new(0),
            misordered: AtomicU64::new(0),
            done_at: Mutex::new(None),
            done: tokio::sync::Notify::new(),
            progress,
        })
    }

    /// One message seen, in its sender's order or not.
    pub fn saw(&self, in_order: bool) {
        if !in_order {
            self.misordered.fetch_add(1, Ordering::Relaxed);
        }
        self.progress.received();
        if self.seen.fetch_add(1, Ordering::Relaxed) + 1 == self.target {
            *self.done_at.lock().unwrap() = Some(Instant::now());
            self.done.notify_one();
        }
    }

    /// One message numbered `seq` seen, all of the run's from one sender to one actor: in order
    /// when it is the count seen so far.
    pub fn saw_seq(&self, seq: u64) {
        self.saw(seq == self.seen.load(Ordering::Relaxed));
    }

    /// When the last message was seen. (`notify_one` keeps a permit for a late waiter.)
    pub async fn wait(&self) -> Instant {
        loop {
            if let Some(t) = *self.done_at.lock().unwrap() {
                return t;
            }
            self.done.notified().await;
        }
    }

    /// [`wait`](Self::wait) while `sender` runs, and what it returned: a sender that fails ends
    /// the run with its own error, not the deadline's.
    pub async fn wait_for_sender<T>(&self, sender: tokio::task::JoinHandle<Res<T>>) -> Res<(Instant, T)> {
        let mut sender = std::pin::pin!(join(sender));
        tokio::select! {
            t1 = self.wait() => Ok((t1, sender.await?)),
            sent = &mut sender => {
                let sent = sent?;
                Ok((self.wait().await, sent))
            }
        }
    }

    pub fn check(&self) -> Res<()> {
        let (seen, mis) = (self.seen.load(Ordering::Relaxed), self.misordered.load(Ordering::Relaxed));
        if seen != self.target {
            return Err(format!("saw {seen} of {}", self.target));
        }
        if mis != 0 {
            return Err(format!("{mis} messages out of order"));
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Results
// ---------------------------------------------------------------------------------------------

/// Latency summary in microseconds.
#[derive(Clone, Copy)]
pub struct Lat {
    pub median: f64,
    pub p99: f64,
    pub max: f64,
}

impl Lat {
    pub fn from_nanos(mut v: Vec<u64>) -> Result<Lat, String> {
        if v.is_empty() {
            return Err("no latency samples".into());
        }
        v.sort_unstable();
        let at = |q: f64| v[((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1] as f64 / 1e3;
        Ok(Lat { median: at(0.5), p99: at(0.99), max: *v.last().unwrap() as f64 / 1e3 })
    }

    pub fn json(&self) -> String {
        format!("{{\"median\":{:.1},\"p99\":{:.1},\"max\":{:.1}}}", self.median, self.p99, self.max)
    }

    /// [`Lat::json`] of a result, `null` for a failed one.
    pub fn json_or_null(r: &Res<Lat>) -> String {
        r.as_ref().map(Lat::json).unwrap_or_else(|_| "null".into())
    }
}

/// Runs `WARMUP_RTT + n` sequential round trips and evaluates to the last `n` of their times in
/// nanoseconds (`Vec<u64>`). `sample_rtts!(n, |i| { ... })`: the block is one round trip, `i`
/// (a `u64`) its number from 0; it times itself and evaluates to the `Duration`. A macro rather
/// than a function taking an async closure, so that `?` and `return` in the block leave the
/// enclosing function and the enclosing future stays `Send` for `tokio::spawn`.
macro_rules! sample_rtts {
    ($n:expr, |$i:ident| $round:block) => {{
        let n: usize = $n;
        let mut samples = Vec::with_capacity(n);
        for i in 0..($crate::common::WARMUP_RTT + n) {
            let $i = i as u64;
            let rtt: std::time::Duration = $round;
            if i >= $crate::common::WARMUP_RTT {
                samples.push(rtt.as_nanos() as u64);
            }
        }
        samples
    }};
}
pub(crate) use sample_rtts;

pub fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `,"error":"..."` for the failed parts (`name: error`, in the order given), or nothing.
pub fn errors_field(parts: &[(&str, Option<&String>)]) -> String {
    let errs: Vec<String> = parts.iter().filter_map(|(name, e)| e.map(|e| format!("{name}: {e}"))).collect();
    if errs.is_empty() {
        String::new()
    } else {
        format!(",\"error\":{}", json_str(&errs.join("; ")))
    }
}

/// `t / r` to three decimals, or `null`.
pub fn ratio(t: Option<f64>, r: Option<f64>) -> String {
    match (t, r) {
        // Three significant digits also where tether is orders of magnitude below raw (W5).
        (Some(t), Some(r)) if r > 0.0 && t / r < 0.01 => format!("{:.2e}", t / r),
        (Some(t), Some(r)) if r > 0.0 => format!("{:.3}", t / r),
        _ => "null".into(),
    }
}

// ---------------------------------------------------------------------------------------------
// Raw TCP
// ---------------------------------------------------------------------------------------------

/// A connected pair over 127.0.0.1: (dialing side, accepting side).
pub async fn tcp_pair() -> Res<(TcpStream, TcpStream)> {
    let listener = TcpListener::bind("127.0.0.1:0").await.map_err(|e| format!("bind: {e}"))?;
    let addr = listener.local_addr().map_err(|e| format!("local_addr: {e}"))?;
    let (dial, accept) = tokio::join!(TcpStream::connect(addr), listener.accept());
    let dial = dial.map_err(|e| format!("connect: {e}"))?;
    let (accept, _) = accept.map_err(|e| format!("accept: {e}"))?;
    Ok((dial, accept))
}

/// Same as [`tcp_pair`] with `TCP_NODELAY` set on both ends (the raw baseline's job; tether
/// sets it itself).
pub async fn raw_pair() -> Res<(TcpStream, TcpStream)> {
    let (a, b) = tcp_pair().await?;
    a.set_nodelay(true).map_err(|e| format!("nodelay: {e}"))?;
    b.set_nodelay(true).map_err(|e| format!("nodelay: {e}"))?;
    Ok((a, b))
}

/// A frame: `u32` little-endian length, payload.
pub async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, payload: &[u8]) -> Res<()> {
    w.write_all(&(payload.len() as u32).to_le_bytes()).await.map_err(|e| format!("write: {e}"))?;
    w.write_all(payload).await.map_err(|e| format!("write: {e}"))
}

/// A tagged frame: length (covering tag and payload), tag, payload. (channels only)
#[allow(dead_code)]
pub async fn write_tagged<W: AsyncWrite + Unpin>(w: &mut W, tag: u8, payload: &[u8]) -> Res<()> {
    w.write_all(&(payload.len() as u32 + 1).to_le_bytes()).await.map_err(|e| format!("write: {e}"))?;
    w.write_all(&[tag]).await.map_err(|e| format!("write: {e}"))?;
    w.write_all(payload).await.map_err(|e| format!("write: {e}"))
}

pub async fn flush<W: AsyncWrite + Unpin>(w: &mut W) -> Res<()> {
    w.flush().await.map_err(|e| format!("flush: {e}"))
}

/// Reads one frame into `buf` (reusing it); `false` on a clean end of stream.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R, buf: &mut Vec<u8>) -> Res<bool> {
    let len = match r.read_u32_le().await {
        Ok(n) => n as usize,
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(false),
        Err(e) => return Err(format!("read: {e}")),
    };
    buf.resize(len, 0);
    r.read_exact(buf).await.map_err(|e| format!("read: {e}"))?;
    Ok(true)
}

pub async fn join<T>(h: tokio::task::JoinHandle<Res<T>>) -> Res<T> {
    h.await.map_err(|e| format!("task failed: {e}"))?
}

/// The raw round-trip baseline (channels W2, actors W6-ask): `n` sequential request/response
/// round trips of one small frame each (after a warm-up), echo task on the other end.
pub async fn raw_rtt(n: usize, p: Arc<Progress>) -> Res<Lat> {
    p.stage("connect");
    let (a, b) = raw_pair().await?;
    let echo = tokio::spawn(raw_echo(b));
    let samples = raw_round_trips(a, n, &p).await?;
    join(echo).await?;
    Lat::from_nanos(samples)
}

/// The echoing end of [`raw_rtt`]: answers every frame with itself until the stream ends.
pub async fn raw_echo(stream: TcpStream) -> Res<()> {
    let (r, w) = stream.into_split();
    let mut r = BufReader::with_capacity(RAW_BUF, r);
    let mut w = BufWriter::with_capacity(RAW_BUF, w);
    let mut buf = Vec::new();
    while read_frame(&mut r, &mut buf).await? {
        write_frame(&mut w, &buf).await?;
        flush(&mut w).await?;
    }
    Ok(())
}

/// The asking end of [`raw_rtt`]: `n` timed round trips (nanoseconds each); closes the
/// stream when done, which ends the echo.
pub async fn raw_round_trips(stream: TcpStream, n: usize, p: &Progress) -> Res<Vec<u64>> {
    let mut raw = RawAsker::new(stream);
    p.stage("round trips");
    let samples = sample_rtts!(n, |i| {
        let rtt = raw.round_trip(i).await?;
        p.sent();
        p.received();
        rtt
    });
    Ok(samples)
}

/// The asking end of a raw round-trip connection, one round trip at a time.
pub struct RawAsker {
    r: BufReader<tokio::net::tcp::OwnedReadHalf>,
    w: BufWriter<tokio::net::tcp::OwnedWriteHalf>,
    buf: Vec<u8>,
}

impl RawAsker {
    pub fn new(stream: TcpStream) -> RawAsker {
        let (r, w) = stream.into_split();
        RawAsker { r: BufReader::with_capacity(RAW_BUF, r), w: BufWriter::with_capacity(RAW_BUF, w), buf: Vec::new() }
    }

    /// Sends message `i`, waits for its echo and checks it; returns the time it took.
    pub async fn round_trip(&mut self, i: u64) -> Res<std::time::Duration> {
        let t = Instant::now();
        write_frame(&mut self.w, &Small::new(i).encode()).await?;
        flush(&mut self.w).await?;
        if !read_frame(&mut self.r, &mut self.buf).await? {
            return Err("echo side closed".into());
        }
        let rtt = t.elapsed();
        if Small::decode(&self.buf)?.seq != i {
            return Err("response out of order".into());
        }
        Ok(rtt)
    }
}
