//! Channel benchmarks W1–W5 from DESIGN.md ("Benchmarks"), each beside a raw-TCP baseline.
//!
//! Every workload runs over TCP on 127.0.0.1 in a fresh tokio runtime with two worker threads
//! (sender and receiver in one process). The raw baseline is plain tokio: `u32` little-endian
//! length-prefixed frames through 64 KiB `BufWriter`/`BufReader`, no multiplexing; where a
//! workload needs several logical channels on one connection (W4, W5) the raw frames carry a
//! one-byte channel tag, and W5's writer sends the 64 MiB frame whole, so the raw figure shows
//! the head-of-line blocking tether is built to avoid.
//!
//! Output: one JSON object per workload on stdout, progress on stderr.
//!
//! ```text
//! cargo bench --bench channels                 # full counts
//! cargo bench --bench channels -- --quick      # smaller counts, under a minute
//! cargo bench --bench channels -- W1 W5        # only the named workloads ("W2" includes W2-oneshot,
//!                                              # "W3" W3-blob: the bytes as `Blob`s, W3-pipe: as
//!                                              # a `pipe` byte stream, and W3-json)
//! cargo bench --bench channels -- W3-json      # W3 with JSON text, compression off, LZ4 and Zstd
//! ```
//!
//! W3-json moves the same total in messages of JSON text (a serde_json array of records, about
//! `w3_msg` bytes, sent as `String`s), over a raw-TCP baseline moving the same bytes, and over
//! tether with compression off, LZ4 and Zstd (`Config::compression`, both sides). Each line gives
//! the payload's MB/s and, for tether, `wire`: the bytes the sender put on the connection over
//! the payload bytes (1.0 uncompressed; the compression ratio is its inverse).
//!
//! Each measurement has a deadline; a hang becomes an `"error"` field naming the stage it
//! reached and how many messages had been sent and received, instead of a stuck process.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{errors_field, ratio};
use common::{
    flush, join, raw_pair, raw_rtt, read_frame, sample_rtts, tcp_pair, write_frame, write_tagged, Bench, Lat, Progress,
    Res, Small, RAW_BUF, WARMUP_RTT,
};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};

const BENCH: Bench = Bench { tag: "channels", tether_only_env: true };

/// Capacity of the tether channels carrying small messages.
const SMALL_CAP: usize = 1024;
/// Capacity of the tether channels carrying 1 MiB messages.
const BULK_CAP: usize = 16;
/// Upper bound on W5 samples, so the ping loop ends even if the big message never arrives.
const W5_MAX_SAMPLES: usize = 10_000_000;

// ---------------------------------------------------------------------------------------------
// Options, sizes, results
// ---------------------------------------------------------------------------------------------

struct Sizes {
    w1_msgs: u64,
    w2_rtts: usize,
    w3_bytes: u64,
    w3_msg: usize,
    w4_chans: usize,
    w4_per_chan: u64,
    w5_big: usize,
    deadline: Duration,
}

impl Sizes {
    fn full() -> Self {
        Sizes {
            w1_msgs: 1_000_000,
            w2_rtts: 20_000,
            w3_bytes: 1 << 30,
            w3_msg: 1 << 20,
            w4_chans: 100,
            w4_per_chan: 10_000,
            w5_big: 64 << 20,
            deadline: Duration::from_secs(120),
        }
    }

    fn quick() -> Self {
        Sizes {
            w1_msgs: 100_000,
            w2_rtts: 2_000,
            w3_bytes: 128 << 20,
            w3_msg: 1 << 20,
            w4_chans: 100,
            w4_per_chan: 1_000,
            w5_big: 16 << 20,
            deadline: Duration::from_secs(20),
        }
    }
}

fn print_rate(workload: &str, unit: &str, tether: &Res<f64>, raw: &Res<f64>, extra: &str) {
    let num = |r: &Res<f64>| r.as_ref().map(|v| format!("{v:.0}")).unwrap_or_else(|_| "null".into());
    println!(
        "{{\"workload\":\"{workload}\",\"unit\":\"{unit}\",\"tether\":{},\"raw\":{},\"ratio\":{}{extra}{}}}",
        num(tether),
        num(raw),
        ratio(tether.as_ref().ok().copied(), raw.as_ref().ok().copied()),
        errors(tether, raw)
    );
}

fn print_lat(workload: &str, tether: &Res<Lat>, raw: &Res<Lat>, extra: &str) {
    println!(
        "{{\"workload\":\"{workload}\",\"unit\":\"us\",\"tether\":{},\"raw\":{},\"ratio\":{}{extra}{}}}",
        Lat::json_or_null(tether),
        Lat::json_or_null(raw),
        ratio(tether.as_ref().ok().map(|l| l.median), raw.as_ref().ok().map(|l| l.median)),
        errors(tether, raw)
    );
}

/// The `"error"` field of a tether/raw pair: raw first.
fn errors<T, R>(tether: &Res<T>, raw: &Res<R>) -> String {
    errors_field(&[("raw", raw.as_ref().err()), ("tether", tether.as_ref().err())])
}

/// Logs (to stderr) the slowest W5 round trips and when each started after the big send began,
/// so a stall can be placed within the transfer.
fn log_slowest(label: &str, rtts: &[u64], starts: &[Duration], transfer: Duration) {
    let mut idx: Vec<usize> = (0..rtts.len()).collect();
    idx.sort_unstable_by_key(|&i| std::cmp::Reverse(rtts[i]));
    let worst: Vec<String> = idx
        .iter()
        .take(5)
        .map(|&i| format!("{:.0} us at +{:.2} ms", rtts[i] as f64 / 1e3, starts[i].as_secs_f64() * 1e3))
        .collect();
    eprintln!(
        "[channels] {label}: big message took {:.2} ms; slowest round trips: {}",
        transfer.as_secs_f64() * 1e3,
        worst.join(", ")
    );
}

// ---------------------------------------------------------------------------------------------
// Raw baselines
// ---------------------------------------------------------------------------------------------

/// W1 raw: `n` small frames one way. Returns msgs/s.
async fn raw_w1(n: u64, p: Arc<Progress>) -> Res<f64> {
    p.stage("connect");
    let (a, b) = raw_pair().await?;
    let pr = p.clone();
    let recv = tokio::spawn(async move {
        let mut r = BufReader::with_capacity(RAW_BUF, b);
        let mut buf = Vec::new();
        for i in 0..n {
            if !read_frame(&mut r, &mut buf).await? {
                return Err(format!("eof after {i} frames"));
            }
            let m = Small::decode(&buf)?;
            if m.seq != i {
                return Err(format!("got seq {} expected {i}", m.seq));
            }
            pr.received();
        }
        Ok(Instant::now())
    });
    let ps = p.clone();
    let send = tokio::spawn(async move {
        let mut w = BufWriter::with_capacity(RAW_BUF, a);
        let t0 = Instant::now();
        for i in 0..n {
            write_frame(&mut w, &Small::new(i).encode()).await?;
            ps.sent();
        }
        flush(&mut w).await?;
        Ok(t0)
    });
    p.stage("transfer");
    let t0 = join(send).await?;
    let t1 = join(recv).await?;
    Ok(n as f64 / (t1 - t0).as_secs_f64())
}

/// W3 raw: `total` bytes as `msg`-byte frames. Both sides handle owned messages like tether's:
/// the sender builds a fresh buffer per message, the receiver allocates one per message.
/// Returns MB/s.
async fn raw_w3(total: u64, msg: usize, p: Arc<Progress>) -> Res<f64> {
    raw_w3_of(total, vec![0xA5u8; msg], p).await
}

/// W3 raw with frames that are copies of `template` (W3-json's text).
async fn raw_w3_of(total: u64, template: Vec<u8>, p: Arc<Progress>) -> Res<f64> {
    let msg = template.len();
    p.stage("connect");
    let (a, b) = raw_pair().await?;
    let count = total / msg as u64;
    let pr = p.clone();
    let recv = tokio::spawn(async move {
        let mut r = BufReader::with_capacity(RAW_BUF, b);
        let mut bytes = 0u64;
        for _ in 0..count {
            let len = r.read_u32_le().await.map_err(|e| format!("read: {e}"))? as usize;
            let mut m = vec![0u8; len];
            r.read_exact(&mut m).await.map_err(|e| format!("read: {e}"))?;
            bytes += m.len() as u64;
            pr.received();
        }
        Ok((Instant::now(), bytes))
    });
    let ps = p.clone();
    let send = tokio::spawn(async move {
        let mut w = BufWriter::with_capacity(RAW_BUF, a);
        let t0 = Instant::now();
        for _ in 0..count {
            let m = template.clone();
            write_frame(&mut w, &m).await?;
            ps.sent();
        }
        flush(&mut w).await?;
        Ok(t0)
    });
    p.stage("transfer");
    let t0 = join(send).await?;
    let (t1, bytes) = join(recv).await?;
    if bytes != count * msg as u64 {
        return Err(format!("received {bytes} bytes"));
    }
    Ok(bytes as f64 / 1e6 / (t1 - t0).as_secs_f64())
}

/// W4 raw: `chans` sender tasks, `per` messages each, over one connection. A minimal mux: the
/// senders feed one writer task through a bounded queue; frames carry a channel tag; one reader
/// task hands each frame to that channel's receiver task through a bounded queue.
/// Returns total msgs/s.
async fn raw_w4(chans: usize, per: u64, p: Arc<Progress>) -> Res<f64> {
    use tokio::sync::mpsc as tmpsc;
    assert!(chans <= 256);
    p.stage("connect");
    let (a, b) = raw_pair().await?;

    // Receiving side: demux to per-channel tasks.
    let mut receivers = Vec::with_capacity(chans);
    let mut demux = Vec::with_capacity(chans);
    for _ in 0..chans {
        let (tx, mut rx) = tmpsc::channel::<Small>(SMALL_CAP);
        demux.push(tx);
        let pr = p.clone();
        receivers.push(tokio::spawn(async move {
            for i in 0..per {
                let m = rx.recv().await.ok_or("demux closed early")?;
                if m.seq != i {
                    return Err(format!("got seq {} expected {i}", m.seq));
                }
                pr.received();
            }
            Ok(())
        }));
    }
    let reader = tokio::spawn(async move {
        let mut r = BufReader::with_capacity(RAW_BUF, b);
        let mut buf = Vec::new();
        while read_frame(&mut r, &mut buf).await? {
            let tag = *buf.first().ok_or("empty frame")? as usize;
            let m = Small::decode(&buf[1..])?;
            demux[tag].send(m).await.map_err(|_| "receiver task gone".to_string())?;
        }
        Ok(())
    });

    // Sending side: per-channel tasks into one writer.
    let (wtx, mut wrx) = tmpsc::channel::<(u8, Small)>(SMALL_CAP);
    let writer = tokio::spawn(async move {
        let mut w = BufWriter::with_capacity(RAW_BUF, a);
        while let Some((tag, m)) = wrx.recv().await {
            write_tagged(&mut w, tag, &m.encode()).await?;
            while let Ok((tag, m)) = wrx.try_recv() {
                write_tagged(&mut w, tag, &m.encode()).await?;
            }
            flush(&mut w).await?;
        }
        Ok(())
    });
    p.stage("transfer");
    let t0 = Instant::now();
    let mut senders = Vec::with_capacity(chans);
    for c in 0..chans {
        let wtx = wtx.clone();
        let ps = p.clone();
        senders.push(tokio::spawn(async move {
            for i in 0..per {
                wtx.send((c as u8, Small::new(i))).await.map_err(|_| "writer gone".to_string())?;
                ps.sent();
            }
            Ok(())
        }));
    }
    drop(wtx);
    for r in receivers {
        join(r).await?;
    }
    let t1 = Instant::now();
    for s in senders {
        join(s).await?;
    }
    join(writer).await?;
    join(reader).await?;
    Ok((chans as u64 * per) as f64 / (t1 - t0).as_secs_f64())
}

/// W5 raw: ping round trips (tag 0) while one `big`-byte frame (tag 1) crosses the SAME
/// connection in the same direction; the client's writer task writes frames in queue order and
/// the big one whole. Returns latencies of the round trips started while the big frame was in
/// flight, and their count.
async fn raw_w5(big: usize, p: Arc<Progress>) -> Res<(Lat, usize)> {
    use tokio::sync::mpsc as tmpsc;
    p.stage("connect");
    let (a, b) = raw_pair().await?;
    let arrived = Arc::new(AtomicBool::new(false));

    // Server: pong every ping, note when the big frame has arrived.
    let arrived_s = arrived.clone();
    let server = tokio::spawn(async move {
        let (r, w) = b.into_split();
        let mut r = BufReader::with_capacity(RAW_BUF, r);
        let mut w = BufWriter::with_capacity(RAW_BUF, w);
        let mut buf = Vec::new();
        while read_frame(&mut r, &mut buf).await? {
            match buf.first() {
                Some(0) => {
                    write_tagged(&mut w, 0, &buf[1..]).await?;
                    flush(&mut w).await?;
                }
                Some(1) => {
                    if buf.len() != big + 1 {
                        return Err(format!("big frame of {} bytes", buf.len() - 1));
                    }
                    arrived_s.store(true, Ordering::Release);
                    buf = Vec::new(); // release the 64 MiB
                }
                _ => return Err("bad tag".into()),
            }
        }
        Ok(())
    });

    // Client writer: one queue of already-framed byte vectors, written in order.
    let (wtx, mut wrx) = tmpsc::unbounded_channel::<Vec<u8>>();
    let (ra, wa) = a.into_split();
    let writer = tokio::spawn(async move {
        let mut w = BufWriter::with_capacity(RAW_BUF, wa);
        while let Some(bytes) = wrx.recv().await {
            w.write_all(&bytes).await.map_err(|e| format!("write: {e}"))?;
            while let Ok(bytes) = wrx.try_recv() {
                w.write_all(&bytes).await.map_err(|e| format!("write: {e}"))?;
            }
            flush(&mut w).await?;
        }
        Ok(())
    });
    let tagged = |tag: u8, payload: &[u8]| {
        let mut f = Vec::with_capacity(5 + payload.len());
        f.extend_from_slice(&(payload.len() as u32 + 1).to_le_bytes());
        f.push(tag);
        f.extend_from_slice(payload);
        f
    };

    // Built before the clock starts, like tether's ByteBuf.
    let big_frame = tagged(1, &vec![0x5Au8; big]);

    let mut r = BufReader::with_capacity(RAW_BUF, ra);
    let mut buf = Vec::new();
    let mut ping = async |seq: u64| -> Res<Duration> {
        let t = Instant::now();
        wtx.send(tagged(0, &Small::new(seq).encode())).map_err(|_| "writer gone".to_string())?;
        p.sent();
        if !read_frame(&mut r, &mut buf).await? {
            return Err("server closed".into());
        }
        let rtt = t.elapsed();
        if buf.first() != Some(&0) || Small::decode(&buf[1..])?.seq != seq {
            return Err("bad pong".into());
        }
        p.received();
        Ok(rtt)
    };
    p.stage("warm-up pings");
    let mut seq = 0u64;
    for _ in 0..WARMUP_RTT {
        ping(seq).await?;
        seq += 1;
    }
    p.stage("pings during big transfer");
    // Queued ahead of the first measured ping: that ping waits behind the whole frame.
    let go = Instant::now();
    wtx.send(big_frame).map_err(|_| "writer gone".to_string())?;
    let mut samples = Vec::new();
    let mut starts = Vec::new();
    while !arrived.load(Ordering::Acquire) && samples.len() < W5_MAX_SAMPLES {
        starts.push(go.elapsed());
        samples.push(ping(seq).await?.as_nanos() as u64);
        seq += 1;
    }
    log_slowest("W5 raw", &samples, &starts, go.elapsed());
    drop(wtx);
    join(writer).await?;
    drop(r);
    join(server).await?;
    let n = samples.len();
    Ok((Lat::from_nanos(samples)?, n))
}

// ---------------------------------------------------------------------------------------------
// tether
// ---------------------------------------------------------------------------------------------

mod tw {
    use super::*;
    use tether::{mpsc, oneshot, Config, Connection};

    /// W2-oneshot request: the reply goes to a fresh oneshot sender carried in the request.
    #[derive(Serialize, Deserialize)]
    struct Req {
        msg: Small,
        reply: oneshot::Sender<Small>,
    }

    /// A connected pair of tether connections: (dialing side, accepting side).
    async fn conn_pair(p: &Progress) -> Res<(Connection, Connection)> {
        conn_pair_with(p, Config::default()).await
    }

    /// [`conn_pair`] with `cfg` on both sides.
    async fn conn_pair_with(p: &Progress, cfg: Config) -> Res<(Connection, Connection)> {
        p.stage("tcp connect");
        let (a, b) = tcp_pair().await?;
        p.stage("tether handshake");
        let (ca, cb) = tokio::join!(Connection::connect(a, cfg.clone()), Connection::accept(b, cfg));
        let ca = ca.map_err(|e| format!("Connection::connect: {e:?}"))?;
        let cb = cb.map_err(|e| format!("Connection::accept: {e:?}"))?;
        Ok((ca, cb))
    }

    /// Receives the one message expected on a root channel.
    async fn recv_one<T>(rx: &mut mpsc::Receiver<T>, what: &str) -> Res<T>
    where
        T: Serialize + serde::de::DeserializeOwned + Send + 'static,
    {
        match rx.recv().await {
            Ok(Some(v)) => Ok(v),
            Ok(None) => Err(format!("{what}: root channel closed")),
            Err(e) => Err(format!("{what}: recv: {e:?}")),
        }
    }

    /// Ends a W2 run: drops the request Sender, then stops the echo task and closes both
    /// connections.
    fn close_rtt<S>(p: &Progress, req: S, echo: tokio::task::JoinHandle<Res<()>>, conns: (Connection, Connection)) {
        drop(req);
        p.stage("closing");
        echo.abort();
        drop(conns);
    }

    /// W1: the accepting side makes a channel and sends its Sender over the root channel; the
    /// dialing side sends `n` small messages on it. Timed from first send to last receive.
    pub(super) async fn w1(n: u64, p: Arc<Progress>) -> Res<f64> {
        let (ca, cb) = conn_pair(&p).await?;
        p.stage("root channels");
        let (srv_root, _srv_in) = cb.root::<mpsc::Sender<Small>, ()>().ok_or("root channel already taken")?;
        let (_cli_out, mut cli_root) = ca.root::<(), mpsc::Sender<Small>>().ok_or("root channel already taken")?;
        let (tx, mut rx) = mpsc::channel::<Small>(SMALL_CAP);
        p.stage("send Sender over root");
        srv_root.send(tx).await.map_err(|_| "root send failed".to_string())?;
        let remote = recv_one(&mut cli_root, "remote Sender").await?;

        p.stage("transfer");
        let pr = p.clone();
        let recv = tokio::spawn(async move {
            for i in 0..n {
                match rx.recv().await {
                    Ok(Some(m)) if m.seq == i => pr.received(),
                    Ok(Some(m)) => return Err(format!("got seq {} expected {i}", m.seq)),
                    Ok(None) => return Err(format!("channel closed after {i} messages")),
                    Err(e) => return Err(format!("recv after {i} messages: {e:?}")),
                }
            }
            Ok(Instant::now())
        });
        let ps = p.clone();
        let send = tokio::spawn(async move {
            let t0 = Instant::now();
            for i in 0..n {
                remote.send(Small::new(i)).await.map_err(|_| format!("send {i} failed"))?;
                ps.sent();
            }
            Ok(t0)
        });
        let t0 = join(send).await?;
        let t1 = join(recv).await?;
        drop((ca, cb));
        Ok(n as f64 / (t1 - t0).as_secs_f64())
    }

    /// W2: request and response channels (two mpsc), each made by its receiving side and its
    /// Sender sent over the root channel.
    pub(super) async fn w2(n: usize, p: Arc<Progress>) -> Res<Lat> {
        let (ca, cb) = conn_pair(&p).await?;
        p.stage("root channels");
        let (srv_out, mut srv_in) =
            cb.root::<mpsc::Sender<Small>, mpsc::Sender<Small>>().ok_or("root channel already taken")?;
        let (cli_out, mut cli_in) =
            ca.root::<mpsc::Sender<Small>, mpsc::Sender<Small>>().ok_or("root channel already taken")?;
        let (req_tx, mut req_rx) = mpsc::channel::<Small>(SMALL_CAP);
        let (resp_tx, mut resp_rx) = mpsc::channel::<Small>(SMALL_CAP);
        p.stage("exchange Senders over root");
        srv_out.send(req_tx).await.map_err(|_| "root send failed".to_string())?;
        cli_out.send(resp_tx).await.map_err(|_| "root send failed".to_string())?;
        let req = recv_one(&mut cli_in, "request Sender").await?;
        let resp = recv_one(&mut srv_in, "response Sender").await?;

        let echo = tokio::spawn(async move {
            loop {
                match req_rx.recv().await {
                    Ok(Some(m)) => resp.send(m).await.map_err(|_| "response send failed".to_string())?,
                    Ok(None) => return Ok(()),
                    Err(e) => return Err(format!("echo recv: {e:?}")),
                }
            }
        });
        p.stage("round trips");
        let samples = sample_rtts!(n, |i| {
            let t = Instant::now();
            req.send(Small::new(i)).await.map_err(|_| format!("request {i} send failed"))?;
            p.sent();
            let m = match resp_rx.recv().await {
                Ok(Some(m)) => m,
                Ok(None) => return Err(format!("response channel closed at {i}")),
                Err(e) => return Err(format!("response {i}: {e:?}")),
            };
            let rtt = t.elapsed();
            if m.seq != i {
                return Err("response out of order".into());
            }
            p.received();
            rtt
        });
        close_rtt(&p, req, echo, (ca, cb));
        Lat::from_nanos(samples)
    }

    /// W2-oneshot: one request channel; each request carries a fresh oneshot Sender for its reply.
    pub(super) async fn w2_oneshot(n: usize, p: Arc<Progress>) -> Res<Lat> {
        let (ca, cb) = conn_pair(&p).await?;
        p.stage("root channels");
        let (srv_out, _srv_in) = cb.root::<mpsc::Sender<Req>, ()>().ok_or("root channel already taken")?;
        let (_cli_out, mut cli_in) = ca.root::<(), mpsc::Sender<Req>>().ok_or("root channel already taken")?;
        let (req_tx, mut req_rx) = mpsc::channel::<Req>(SMALL_CAP);
        p.stage("send Sender over root");
        srv_out.send(req_tx).await.map_err(|_| "root send failed".to_string())?;
        let req = recv_one(&mut cli_in, "request Sender").await?;

        let echo = tokio::spawn(async move {
            loop {
                match req_rx.recv().await {
                    Ok(Some(r)) => r.reply.send(r.msg).map_err(|_| "oneshot reply failed".to_string())?,
                    Ok(None) => return Ok(()),
                    Err(e) => return Err(format!("echo recv: {e:?}")),
                }
            }
        });
        p.stage("round trips");
        let samples = sample_rtts!(n, |i| {
            let t = Instant::now();
            let (otx, orx) = oneshot::channel::<Small>();
            req.send(Req { msg: Small::new(i), reply: otx }).await.map_err(|_| format!("request {i} send failed"))?;
            p.sent();
            let m = orx.await.map_err(|e| format!("reply {i}: {e:?}"))?;
            let rtt = t.elapsed();
            if m.seq != i {
                return Err("reply out of order".into());
            }
            p.received();
            rtt
        });
        close_rtt(&p, req, echo, (ca, cb));
        Lat::from_nanos(samples)
    }

    /// W3: `total` bytes as `msg`-byte ByteBuf messages on one channel.
    pub(super) async fn w3(total: u64, msg: usize, p: Arc<Progress>) -> Res<f64> {
        let template = vec![0xA5u8; msg];
        w3_of(total, template, Config::default(), p, ByteBuf::from, |m: &ByteBuf| m.len()).await.map(|r| r.0)
    }

    /// W3-json: `total` bytes as `String`s of JSON text (copies of `json`), with `compression`
    /// on both sides. Returns MB/s of text, and the bytes on the wire per byte of text.
    pub(super) async fn w3_json(
        total: u64,
        json: String,
        compression: tether::Compression,
        p: Arc<Progress>,
    ) -> Res<(f64, f64)> {
        let mut cfg = Config::default();
        cfg.compression = compression;
        let text = |bytes: Vec<u8>| String::from_utf8(bytes).expect("the template is text");
        w3_of(total, json.into_bytes(), cfg, p, text, String::len).await
    }

    /// W3-blob: the same bytes as `msg`-byte [`Blob`](tether::Blob) messages, which tether
    /// carries without copying them into or out of the message.
    pub(super) async fn w3_blob(total: u64, msg: usize, p: Arc<Progress>) -> Res<f64> {
        let template = vec![0xA5u8; msg];
        let blob = tether::Blob::from;
        w3_of(total, template, Config::default(), p, blob, |m: &tether::Blob| m.len()).await.map(|r| r.0)
    }

    /// W3-pipe: the same bytes written to a [`pipe::Writer`](tether::pipe::Writer) in `msg`-byte
    /// writes (each copied into the pipe, as raw W3 copies its template) and read from its
    /// `Reader` into a 64 KiB buffer: a byte stream of any length, in pieces of `pipe::PIECE`.
    pub(super) async fn w3_pipe(total: u64, msg: usize, p: Arc<Progress>) -> Res<f64> {
        use tether::pipe;
        let count = total / msg as u64;
        let (ca, cb) = conn_pair(&p).await?;
        p.stage("root channels");
        let (srv_root, _srv_in) = cb.root::<pipe::Writer, ()>().ok_or("root channel already taken")?;
        let (_cli_out, mut cli_root) = ca.root::<(), pipe::Writer>().ok_or("root channel already taken")?;
        let (writer, mut reader) = pipe::channel();
        p.stage("send Writer over root");
        srv_root.send(writer).await.map_err(|_| "root send failed".to_string())?;
        let mut remote = recv_one(&mut cli_root, "remote Writer").await?;

        p.stage("transfer");
        let pr = p.clone();
        let recv = tokio::spawn(async move {
            let mut buf = vec![0u8; 64 * 1024];
            let (mut bytes, mut counted) = (0u64, 0u64);
            loop {
                match reader.read(&mut buf).await {
                    Ok(0) => break,
                    Ok(n) => bytes += n as u64,
                    Err(e) => return Err(format!("read after {bytes} bytes: {e}")),
                }
                while counted < bytes / msg as u64 {
                    counted += 1;
                    pr.received();
                }
            }
            Ok((Instant::now(), bytes))
        });
        let ps = p.clone();
        let send = tokio::spawn(async move {
            let template = vec![0xA5u8; msg];
            let t0 = Instant::now();
            for i in 0..count {
                remote.write_all(&template).await.map_err(|e| format!("write {i}: {e}"))?;
                ps.sent();
            }
            remote.shutdown().await.map_err(|e| format!("shutdown: {e}"))?;
            Ok(t0)
        });
        let rate = w3_rate(send, recv, count * msg as u64).await;
        drop((ca, cb));
        rate
    }

    /// A W3 run's MB/s, from the first send to the last byte received, once all of them were.
    async fn w3_rate(
        send: tokio::task::JoinHandle<Res<Instant>>,
        recv: tokio::task::JoinHandle<Res<(Instant, u64)>>,
        expected: u64,
    ) -> Res<f64> {
        let t0 = join(send).await?;
        let (t1, bytes) = join(recv).await?;
        if bytes != expected {
            return Err(format!("received {bytes} bytes"));
        }
        Ok(bytes as f64 / 1e6 / (t1 - t0).as_secs_f64())
    }

    /// W3 with messages of type `M`, each made of a fresh copy of `template` (as raw W3's
    /// are), over connections configured with `cfg`. Returns MB/s, and the bytes the sender put
    /// on the connection per byte received.
    async fn w3_of<M>(
        total: u64,
        template: Vec<u8>,
        cfg: Config,
        p: Arc<Progress>,
        make: fn(Vec<u8>) -> M,
        len: fn(&M) -> usize,
    ) -> Res<(f64, f64)>
    where
        M: Serialize + serde::de::DeserializeOwned + Send + 'static,
    {
        let msg = template.len();
        let count = total / msg as u64;
        let (ca, cb) = conn_pair_with(&p, cfg).await?;
        p.stage("root channels");
        let (srv_root, _srv_in) = cb.root::<mpsc::Sender<M>, ()>().ok_or("root channel already taken")?;
        let (_cli_out, mut cli_root) = ca.root::<(), mpsc::Sender<M>>().ok_or("root channel already taken")?;
        let (tx, mut rx) = mpsc::channel::<M>(BULK_CAP);
        p.stage("send Sender over root");
        srv_root.send(tx).await.map_err(|_| "root send failed".to_string())?;
        let remote = recv_one(&mut cli_root, "remote Sender").await?;

        p.stage("transfer");
        let pr = p.clone();
        let recv = tokio::spawn(async move {
            let mut bytes = 0u64;
            for i in 0..count {
                match rx.recv().await {
                    Ok(Some(m)) => bytes += len(&m) as u64,
                    Ok(None) => return Err(format!("channel closed after {i} messages")),
                    Err(e) => return Err(format!("recv after {i} messages: {e:?}")),
                }
                pr.received();
            }
            Ok((Instant::now(), bytes))
        });
        let ps = p.clone();
        let wire_before = ca.stats().bytes_out;
        let send = tokio::spawn(async move {
            let t0 = Instant::now();
            for i in 0..count {
                remote.send(make(template.clone())).await.map_err(|_| format!("send {i} failed"))?;
                ps.sent();
            }
            Ok(t0)
        });
        let rate = w3_rate(send, recv, count * msg as u64).await;
        let wire = ca.stats().bytes_out - wire_before;
        drop((ca, cb));
        Ok((rate?, wire as f64 / (count * msg as u64) as f64))
    }

    /// W4: the accepting side makes `chans` channels and sends their Senders (one root message);
    /// the dialing side runs one sender task per channel, `per` messages each.
    pub(super) async fn w4(chans: usize, per: u64, p: Arc<Progress>) -> Res<f64> {
        let (ca, cb) = conn_pair(&p).await?;
        p.stage("root channels");
        let (srv_root, _srv_in) = cb.root::<Vec<mpsc::Sender<Small>>, ()>().ok_or("root channel already taken")?;
        let (_cli_out, mut cli_root) = ca.root::<(), Vec<mpsc::Sender<Small>>>().ok_or("root channel already taken")?;
        let mut txs = Vec::with_capacity(chans);
        let mut receivers = Vec::with_capacity(chans);
        for c in 0..chans {
            let (tx, mut rx) = mpsc::channel::<Small>(SMALL_CAP);
            txs.push(tx);
            let pr = p.clone();
            receivers.push(tokio::spawn(async move {
                for i in 0..per {
                    match rx.recv().await {
                        Ok(Some(m)) if m.seq == i => pr.received(),
                        Ok(Some(m)) => return Err(format!("channel {c}: got seq {} expected {i}", m.seq)),
                        Ok(None) => return Err(format!("channel {c} closed after {i} messages")),
                        Err(e) => return Err(format!("channel {c} recv after {i} messages: {e:?}")),
                    }
                }
                Ok(())
            }));
        }
        p.stage("send Senders over root");
        srv_root.send(txs).await.map_err(|_| "root send failed".to_string())?;
        let remotes = recv_one(&mut cli_root, "remote Senders").await?;
        if remotes.len() != chans {
            return Err(format!("{} Senders arrived", remotes.len()));
        }

        p.stage("transfer");
        let t0 = Instant::now();
        let mut senders = Vec::with_capacity(chans);
        for (c, remote) in remotes.into_iter().enumerate() {
            let ps = p.clone();
            senders.push(tokio::spawn(async move {
                for i in 0..per {
                    remote.send(Small::new(i)).await.map_err(|_| format!("channel {c}: send {i} failed"))?;
                    ps.sent();
                }
                Ok(())
            }));
        }
        for r in receivers {
            join(r).await?;
        }
        let t1 = Instant::now();
        for s in senders {
            join(s).await?;
        }
        drop((ca, cb));
        Ok((chans as u64 * per) as f64 / (t1 - t0).as_secs_f64())
    }

    /// W5: ping/pong (two mpsc) while one `big`-byte ByteBuf crosses on a third channel in the
    /// same direction as the pings.
    pub(super) async fn w5(big: usize, p: Arc<Progress>) -> Res<(Lat, usize)> {
        type SrvOffer = (mpsc::Sender<Small>, mpsc::Sender<ByteBuf>);
        let (ca, cb) = conn_pair(&p).await?;
        p.stage("root channels");
        let (srv_out, mut srv_in) = cb.root::<SrvOffer, mpsc::Sender<Small>>().ok_or("root channel already taken")?;
        let (cli_out, mut cli_in) = ca.root::<mpsc::Sender<Small>, SrvOffer>().ok_or("root channel already taken")?;
        let (req_tx, mut req_rx) = mpsc::channel::<Small>(SMALL_CAP);
        let (big_tx, mut big_rx) = mpsc::channel::<ByteBuf>(BULK_CAP);
        let (resp_tx, mut resp_rx) = mpsc::channel::<Small>(SMALL_CAP);
        p.stage("exchange Senders over root");
        srv_out.send((req_tx, big_tx)).await.map_err(|_| "root send failed".to_string())?;
        cli_out.send(resp_tx).await.map_err(|_| "root send failed".to_string())?;
        let (req, big_remote) = recv_one(&mut cli_in, "request/big Senders").await?;
        let resp = recv_one(&mut srv_in, "response Sender").await?;

        let echo = tokio::spawn(async move {
            loop {
                match req_rx.recv().await {
                    Ok(Some(m)) => resp.send(m).await.map_err(|_| "pong send failed".to_string())?,
                    Ok(None) => return Ok(()),
                    Err(e) => return Err(format!("echo recv: {e:?}")),
                }
            }
        });
        let arrived = Arc::new(AtomicBool::new(false));
        let arrived_r = arrived.clone();
        let big_recv = tokio::spawn(async move {
            match big_rx.recv().await {
                Ok(Some(m)) if m.len() == big => {
                    arrived_r.store(true, Ordering::Release);
                    Ok(Instant::now())
                }
                Ok(Some(m)) => Err(format!("big message of {} bytes", m.len())),
                Ok(None) => Err("big channel closed".into()),
                Err(e) => Err(format!("big recv: {e:?}")),
            }
        });
        // Built before the clock starts. The pinger does not wait for the big sender: a wake from
        // it would put the pinger in that worker's LIFO slot, behind the encoding of the message.
        let big_msg = ByteBuf::from(vec![0x5Au8; big]);
        let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
        let big_send = tokio::spawn(async move {
            go_rx.await.map_err(|_| "no go".to_string())?;
            big_remote.send(big_msg).await.map_err(|_| "big send failed".to_string())?;
            Ok((big_remote, Instant::now()))
        });

        let mut seq = 0u64;
        let mut ping = async |seq: u64| -> Res<Duration> {
            let t = Instant::now();
            req.send(Small::new(seq)).await.map_err(|_| format!("ping {seq} send failed"))?;
            p.sent();
            let m = match resp_rx.recv().await {
                Ok(Some(m)) => m,
                Ok(None) => return Err(format!("pong channel closed at {seq}")),
                Err(e) => return Err(format!("pong {seq}: {e:?}")),
            };
            let rtt = t.elapsed();
            if m.seq != seq {
                return Err("pong out of order".into());
            }
            p.received();
            Ok(rtt)
        };
        p.stage("warm-up pings");
        for _ in 0..WARMUP_RTT {
            ping(seq).await?;
            seq += 1;
        }
        p.stage("pings during big transfer");
        let go = Instant::now();
        let _ = go_tx.send(());
        let mut samples = Vec::new();
        let mut starts = Vec::new();
        while !arrived.load(Ordering::Acquire) && samples.len() < W5_MAX_SAMPLES {
            starts.push(go.elapsed());
            samples.push(ping(seq).await?.as_nanos() as u64);
            seq += 1;
        }
        log_slowest("W5 tether", &samples, &starts, go.elapsed());
        p.stage("big message arrived; closing");
        let arrived_at = join(big_recv).await?;
        let (_big_remote, sent_at) = join(big_send).await?;
        eprintln!(
            "[channels] W5 tether: big send() returned at +{:.2} ms, message received at +{:.2} ms",
            (sent_at - go).as_secs_f64() * 1e3,
            (arrived_at - go).as_secs_f64() * 1e3
        );
        echo.abort();
        drop((ca, cb));
        let n = samples.len();
        Ok((Lat::from_nanos(samples)?, n))
    }
}

/// JSON text of about `len` bytes, as an application would send it: a serde_json array of
/// records (ids, names, e-mail addresses, flags, scores, tags) whose values vary from record to
/// record.
fn json_text(len: usize) -> String {
    #[derive(Serialize)]
    struct Record {
        id: u64,
        user: String,
        email: String,
        active: bool,
        score: f64,
        created: String,
        tags: Vec<&'static str>,
    }
    const TAGS: [&str; 8] = ["admin", "beta", "eu-west", "us-east", "mobile", "trial", "verified", "legacy"];
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    // Records of about 150 bytes each.
    let records: Vec<Record> = (0..(len / 150).max(1) as u64)
        .map(|id| {
            let r = next();
            Record {
                id,
                user: format!("user-{:06}", r % 1_000_000),
                email: format!("user{}@example{}.com", r % 100_000, r % 7),
                active: r % 3 != 0,
                score: (r % 10_000) as f64 / 100.0,
                created: format!("2026-{:02}-{:02}T{:02}:{:02}:00Z", 1 + r % 12, 1 + r % 28, r % 24, r % 60),
                tags: (0..(r % 4)).map(|i| TAGS[((r >> (8 * i)) % 8) as usize]).collect(),
            }
        })
        .collect();
    serde_json::to_string(&records).expect("records serialize")
}

// ---------------------------------------------------------------------------------------------
// Driver
// ---------------------------------------------------------------------------------------------

fn main() {
    let args = BENCH.args();
    let wanted = |name: &str| args.wanted(name);
    let s = if args.quick { Sizes::quick() } else { Sizes::full() };
    let d = s.deadline;

    let mut w1_tether: Option<f64> = None;
    if wanted("W1") {
        let n = s.w1_msgs;
        let raw = BENCH.measure("W1 raw", d, move |p| raw_w1(n, p));
        let tether = BENCH.measure("W1 tether", d, move |p| tw::w1(n, p));
        w1_tether = tether.as_ref().ok().copied();
        print_rate("W1", "msgs/s", &tether, &raw, "");
    }
    if wanted("W2") {
        let n = s.w2_rtts;
        let raw = BENCH.measure("W2 raw", d, move |p| raw_rtt(n, p));
        let tether = BENCH.measure("W2 tether", d, move |p| tw::w2(n, p));
        print_lat("W2", &tether, &raw, "");
        if wanted("W2-ONESHOT") {
            // The raw workload is the same round trip; there is no oneshot on raw TCP.
            let tether = BENCH.measure("W2-oneshot tether", d, move |p| tw::w2_oneshot(n, p));
            print_lat("W2-oneshot", &tether, &raw, "");
        }
    }
    if wanted("W3") {
        let (total, msg) = (s.w3_bytes, s.w3_msg);
        let raw = BENCH.measure("W3 raw", d, move |p| raw_w3(total, msg, p));
        let tether = BENCH.measure("W3 tether", d, move |p| tw::w3(total, msg, p));
        print_rate("W3", "MB/s", &tether, &raw, "");
        if wanted("W3-BLOB") {
            let tether = BENCH.measure("W3-blob tether", d, move |p| tw::w3_blob(total, msg, p));
            print_rate("W3-blob", "MB/s", &tether, &raw, "");
        }
        if wanted("W3-PIPE") {
            let tether = BENCH.measure("W3-pipe tether", d, move |p| tw::w3_pipe(total, msg, p));
            print_rate("W3-pipe", "MB/s", &tether, &raw, "");
        }
    }
    if wanted("W3-JSON") {
        let total = s.w3_bytes;
        let text = json_text(s.w3_msg);
        eprintln!("[channels] W3-json: {} bytes of JSON per message", text.len());
        let template = text.clone().into_bytes();
        let raw = BENCH.measure("W3-json raw", d, move |p| raw_w3_of(total, template, p));
        use tether::{Algorithm, Compression};
        for (name, compression) in [
            ("off", Compression::off()),
            ("lz4", Compression::new([Algorithm::Lz4])),
            ("zstd", Compression::new([Algorithm::Zstd])),
        ] {
            let label = format!("W3-json-{name}");
            let text = text.clone();
            let tether =
                BENCH.measure(&format!("{label} tether"), d, move |p| tw::w3_json(total, text, compression, p));
            let wire = tether.as_ref().map(|r| format!("{:.4}", r.1)).unwrap_or_else(|_| "null".into());
            print_rate(&label, "MB/s", &tether.map(|r| r.0), &raw, &format!(",\"wire\":{wire}"));
        }
    }
    if wanted("W4") {
        let (chans, per) = (s.w4_chans, s.w4_per_chan);
        let raw = BENCH.measure("W4 raw", d, move |p| raw_w4(chans, per, p));
        let tether = BENCH.measure("W4 tether", d, move |p| tw::w4(chans, per, p));
        let vs_w1 = match (tether.as_ref().ok(), w1_tether) {
            (Some(t), Some(w1)) if w1 > 0.0 => format!("{:.3}", t / w1),
            _ => "null".into(),
        };
        print_rate("W4", "msgs/s", &tether, &raw, &format!(",\"vs_w1\":{vs_w1}"));
    }
    if wanted("W5") {
        let big = s.w5_big;
        let raw = BENCH.measure("W5 raw", d, move |p| raw_w5(big, p));
        let tether = BENCH.measure("W5 tether", d, move |p| tw::w5(big, p));
        let samples = |r: &Res<(Lat, usize)>| r.as_ref().map(|x| x.1.to_string()).unwrap_or_else(|_| "null".into());
        let extra = format!(",\"samples\":{},\"raw_samples\":{}", samples(&tether), samples(&raw));
        print_lat("W5", &tether.map(|x| x.0), &raw.map(|x| x.0), &extra);
    }
}
