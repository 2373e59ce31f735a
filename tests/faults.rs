//! Connections under injected faults (feature `fault-injection`): a
//! black-holed, cut, corrupted, delayed or throttled link, over real TCP.

mod common;

use std::time::{Duration, Instant};

use common::{pair_with, within, Kind};
use serde::{Deserialize, Serialize};
use tether::transport::fault::{FaultController, Faulty, Proxy};
use tether::{Config, Connection, ConnectionError, ProtocolError, RecvError, WireError};
use tokio::net::{TcpListener, TcpStream};

const T: Duration = Duration::from_secs(20);

/// Heartbeats fast enough that the tests finish in about a second.
fn quick() -> Config {
    let mut cfg = Config::default();
    cfg.ping_interval = Duration::from_millis(200);
    cfg.idle_timeout = Duration::from_secs(1);
    cfg
}

/// A TCP pair whose dialing side runs over a `Faulty` wrapper.
async fn faulty_client(cfg: Config) -> (Connection, Connection, FaultController) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let ctl = FaultController::new();
    let (c, s) = tokio::join!(
        async { Connection::connect(Faulty::new(TcpStream::connect(addr).await.unwrap(), &ctl), cfg.clone()).await },
        async { Connection::accept(l.accept().await.unwrap().0, cfg.clone()).await },
    );
    (c.unwrap(), s.unwrap(), ctl)
}

/// A TCP pair through a fault-injecting proxy.
async fn through_proxy(cfg: Config) -> (Connection, Connection, Proxy) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy = Proxy::start(l.local_addr().unwrap()).await.unwrap();
    let (c, s) = tokio::join!(
        async { Connection::connect(TcpStream::connect(proxy.local_addr()).await.unwrap(), cfg.clone()).await },
        async { Connection::accept(l.accept().await.unwrap().0, cfg.clone()).await },
    );
    (c.unwrap(), s.unwrap(), proxy)
}

fn is_timeout(e: &ConnectionError) -> bool {
    matches!(e, ConnectionError::Protocol(ProtocolError::Timeout(_)))
}

/// A black hole closes nothing; both ends notice only because the peer
/// goes silent, within the idle timeout, and receivers waiting on the
/// connection are told.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_holed_link_is_declared_dead_within_the_idle_timeout() {
    within(T, async {
        let cfg = quick();
        let (c, s, proxy) = through_proxy(cfg.clone()).await;
        let (tx, mut c_rx) = c.root::<u64, u64>().unwrap();
        let (_s_tx, mut s_rx) = s.root::<u64, u64>().unwrap();
        tx.send(1).await.unwrap();
        assert_eq!(s_rx.recv().await.unwrap(), Some(1));
        let waiting = tokio::spawn(async move { c_rx.recv().await });

        let started = Instant::now();
        proxy.link().black_hole();
        let (ce, se) = tokio::join!(c.closed(), s.closed());
        let elapsed = started.elapsed();
        assert!(is_timeout(&ce) && is_timeout(&se), "client: {ce}, server: {se}");
        // Silence is counted from the last byte heard, which may precede the
        // black hole by up to one ping interval.
        assert!(elapsed >= cfg.idle_timeout - cfg.ping_interval, "declared dead after {elapsed:?}");
        // The idle timeout plus slack for a loaded machine: what it rules out
        // is waiting for the operating system's TCP timeouts (minutes).
        assert!(elapsed < Duration::from_secs(3), "declared dead only after {elapsed:?}");
        let got = waiting.await.unwrap();
        assert!(matches!(&got, Err(RecvError::Connection(e)) if is_timeout(e)), "{got:?}");
        assert!(matches!(s_rx.recv().await, Err(RecvError::Connection(ref e)) if is_timeout(e)));
        assert!(proxy.link().discarded() > 0, "pings went into the hole");
        eprintln!("black hole declared dead after {elapsed:?}");
    })
    .await;
}

/// A partition that heals before the idle timeout loses nothing: the
/// connection survives and what was sent meanwhile arrives, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_shorter_than_the_idle_timeout_loses_nothing() {
    within(T, async {
        let (c, s, proxy) = through_proxy(quick()).await;
        let (tx, _) = c.root::<u32, u64>().unwrap();
        let (_, mut rx) = s.root::<u64, u32>().unwrap();
        tx.send(0).await.unwrap();
        assert_eq!(rx.recv().await.unwrap(), Some(0));
        proxy.link().pause();
        for n in 1..=100 {
            tx.send(n).await.unwrap();
        }
        // Nothing passes while paused; no event says so, so look for a while.
        let early = tokio::time::timeout(Duration::from_millis(300), rx.recv()).await;
        assert!(early.is_err(), "{early:?} passed a paused link");
        proxy.link().heal();
        for n in 1..=100 {
            assert_eq!(rx.recv().await.unwrap(), Some(n));
        }
        assert!(c.error().is_none() && s.error().is_none());
        assert_eq!(proxy.link().discarded(), 0);
    })
    .await;
}

/// Inverted bits in a frame header end that connection with a typed wire
/// error (no panic: a panicking driver would report `DriverGone`), and
/// another connection of the same process is unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_bytes_end_only_that_connection_with_a_typed_error() {
    within(T, async {
        let (good_c, good_s) = pair_with(Kind::Tcp, Config::default(), Config::default()).await;
        let (gtx, _) = good_c.root::<u64, u64>().unwrap();
        let (_, mut grx) = good_s.root::<u64, u64>().unwrap();

        let (c, s, ctl) = faulty_client(Config::default()).await;
        let (_, mut c_rx) = c.root::<u64, u64>().unwrap();
        let (s_tx, _) = s.root::<u64, u64>().unwrap();
        s_tx.send(1).await.unwrap();
        assert_eq!(c_rx.recv().await.unwrap(), Some(1));
        // The link is quiet, so the next byte the client reads starts a
        // frame: its kind turns into an unknown one.
        ctl.corrupt_next(1);
        s_tx.send(2).await.unwrap();
        let got = c_rx.recv().await;
        let Err(RecvError::Connection(ConnectionError::Protocol(ProtocolError::Wire(WireError::UnknownFrameKind(k))))) =
            got
        else {
            panic!("{got:?}")
        };
        assert!(k >= 0xf7, "kind {k:#x} is an inverted kind");
        assert_eq!(ctl.corrupted(), 1);
        // The server sees the client go away.
        let err = s.closed().await;
        assert!(matches!(err, ConnectionError::Eof), "{err}");

        for n in 0..100 {
            gtx.send(n).await.unwrap();
            assert_eq!(grx.recv().await.unwrap(), Some(n));
        }
        assert!(good_c.error().is_none() && good_s.error().is_none());
    })
    .await;
}

/// Corruption anywhere in a stream of messages (header, port table or
/// payload) never panics or hangs: the connection either ends with a
/// protocol error, or the damaged message fails to decode, or (payload
/// bytes have no checksum) arrives altered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corruption_at_any_offset_never_panics_or_hangs() {
    within(T, async {
        for skip in [0u64, 1, 2, 5, 6, 9, 10, 11, 12, 15, 20, 40, 100, 1000, 5000] {
            let (c, s, ctl) = faulty_client(quick()).await;
            let (_, mut rx) = c.root::<u64, Vec<u8>>().unwrap();
            let (tx, _) = s.root::<Vec<u8>, u64>().unwrap();
            ctl.corrupt_after(skip, 3);
            let mut outcome = "all arrived";
            for n in 0..50u8 {
                if tx.send(vec![n; 200]).await.is_err() {
                    break;
                }
                match within(Duration::from_secs(5), rx.recv()).await {
                    Ok(Some(v)) if v == vec![n; 200] => {}
                    Ok(Some(_)) => outcome = "altered payload",
                    Ok(None) => unreachable!("nobody closed the channel"),
                    Err(RecvError::Decode(_)) => outcome = "decode error",
                    Err(RecvError::Connection(e)) => {
                        assert!(matches!(e, ConnectionError::Protocol(_)), "skip {skip}: {e}");
                        outcome = "protocol error";
                        break;
                    }
                    Err(e) => panic!("skip {skip}: {e}"),
                }
            }
            assert!(!matches!(c.error(), Some(ConnectionError::DriverGone)));
            // The three bytes were inverted (the stream is longer than any
            // offset here); only a connection ended by the first of them
            // may not have read the others.
            let corrupted = ctl.corrupted();
            if outcome == "protocol error" {
                assert!((1..=3).contains(&corrupted), "skip {skip}: {corrupted} bytes corrupted");
            } else {
                assert_eq!(corrupted, 3, "skip {skip}: corrupted bytes");
            }
            eprintln!("corruption after {skip} bytes: {outcome}");
        }
    })
    .await;
}

/// A cut fails the wrapped end with the reset, and the peer sees the
/// transport close (EOF): neither waits for a timeout, which would end them
/// with `Timeout` instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_fails_both_ends_without_a_timeout() {
    within(T, async {
        let (c, s, ctl) = faulty_client(Config::default()).await;
        // Both senders stay alive: a dropped one would end the peer's stream
        // cleanly, before any cut.
        let (_c_tx, mut c_rx) = c.root::<u64, u64>().unwrap();
        let (_s_tx, mut s_rx) = s.root::<u64, u64>().unwrap();
        let waiting = tokio::spawn(async move { c_rx.recv().await });
        tokio::task::yield_now().await;

        ctl.cut();
        let (ce, se) = tokio::join!(c.closed(), s.closed());
        assert!(matches!(&ce, ConnectionError::Io(e) if e.kind() == std::io::ErrorKind::ConnectionReset), "{ce}");
        assert!(matches!(se, ConnectionError::Eof), "{se}");
        let got = waiting.await.unwrap();
        assert!(
            matches!(&got, Err(RecvError::Connection(ConnectionError::Io(e))) if e.kind() == std::io::ErrorKind::ConnectionReset),
            "{got:?}"
        );
        let got = s_rx.recv().await;
        assert!(matches!(got, Err(RecvError::Connection(ConnectionError::Eof))), "{got:?}");
    })
    .await;
}

/// The proxy cuts every connection through it; both ends see the transport
/// close (EOF, not the idle timeout), and a new connection through the
/// proxy works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_cuts_all_connections_and_lets_new_ones_through() {
    within(T, async {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = Proxy::start(l.local_addr().unwrap()).await.unwrap();
        let mut pairs = Vec::new();
        for _ in 0..3 {
            let (c, s) = tokio::join!(
                async { Connection::connect(TcpStream::connect(proxy.local_addr()).await.unwrap(), quick()).await },
                async { Connection::accept(l.accept().await.unwrap().0, quick()).await },
            );
            pairs.push((c.unwrap(), s.unwrap()));
        }
        assert_eq!(proxy.connections().len(), 3);
        proxy.cut_all();
        for (c, s) in &pairs {
            let (ce, se) = tokio::join!(c.closed(), s.closed());
            for e in [ce, se] {
                assert!(matches!(e, ConnectionError::Eof), "{e}");
            }
        }

        let (c, s) = tokio::join!(
            async { Connection::connect(TcpStream::connect(proxy.local_addr()).await.unwrap(), quick()).await },
            async { Connection::accept(l.accept().await.unwrap().0, quick()).await },
        );
        let (tx, _) = c.unwrap().root::<u64, u64>().unwrap();
        let (_, mut rx) = s.unwrap().root::<u64, u64>().unwrap();
        tx.send(9).await.unwrap();
        assert_eq!(rx.recv().await.unwrap(), Some(9));
        let _ = proxy.connection(3).await;
    })
    .await;
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Numbered {
    n: u32,
    #[serde(with = "serde_bytes")]
    body: Vec<u8>,
}

fn numbered(n: u32, len: usize) -> Numbered {
    Numbered { n, body: (0..len).map(|i| (i as u32).wrapping_mul(31).wrapping_add(n) as u8).collect() }
}

/// Delay in both directions: messages arrive intact and in order, and a
/// round trip takes the two delays, applied once each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_messages_arrive_intact_and_in_order() {
    within(T, async {
        let (c, s, proxy) = through_proxy(Config::default()).await;
        let (tx, mut back) = c.root::<Numbered, u32>().unwrap();
        let (ack, mut rx) = s.root::<u32, Numbered>().unwrap();
        // Long enough that a delay applied twice stands out from the slack.
        let delay = Duration::from_millis(250);
        proxy.connection(0).await.delay(delay);

        let started = Instant::now();
        tx.send(numbered(0, 10)).await.unwrap();
        assert_eq!(rx.recv().await.unwrap(), Some(numbered(0, 10)));
        ack.send(0).await.unwrap();
        assert_eq!(back.recv().await.unwrap(), Some(0));
        let rtt = started.elapsed();
        // Both directions are delayed, once each: at least the two delays,
        // and less than three (one delay of slack for a loaded machine; a
        // delay applied twice, or per read, would make it four or more).
        assert!(rtt >= 2 * delay, "round trip {rtt:?}");
        assert!(rtt < 3 * delay, "round trip {rtt:?}");

        // A shorter delay for the stream, whose credit makes round trips too.
        proxy.connection(0).await.delay(delay / 5);

        let sender = tokio::spawn(async move {
            for n in 1..=300 {
                tx.send(numbered(n, 1 + (n as usize * 997) % 20_000)).await.unwrap();
            }
        });
        for n in 1..=300 {
            assert_eq!(rx.recv().await.unwrap(), Some(numbered(n, 1 + (n as usize * 997) % 20_000)));
        }
        sender.await.unwrap();
        assert!(c.error().is_none() && s.error().is_none());
        eprintln!("round trip with {delay:?} each way: {rtt:?}, 300 messages after {:?}", started.elapsed());
    })
    .await;
}

/// A throttle slows a 4 MiB transfer down to its rate, and the data still
/// arrives intact and in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttled_transfer_is_slow_but_intact() {
    within(T, async {
        const RATE: u64 = 8 * 1024 * 1024;
        const MSGS: u32 = 64;
        const LEN: usize = 64 * 1024;
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let ctl = FaultController::new();
        ctl.throttle(RATE);
        let (c, s) = tokio::join!(
            async { Connection::connect(TcpStream::connect(addr).await.unwrap(), Config::default()).await },
            async { Connection::accept(Faulty::new(l.accept().await.unwrap().0, &ctl), Config::default()).await },
        );
        let (c, s) = (c.unwrap(), s.unwrap());
        let (tx, _) = c.root::<Numbered, ()>().unwrap();
        let (_, mut rx) = s.root::<(), Numbered>().unwrap();

        let started = Instant::now();
        let sender = tokio::spawn(async move {
            for n in 0..MSGS {
                tx.send(numbered(n, LEN)).await.unwrap();
            }
        });
        for n in 0..MSGS {
            assert_eq!(rx.recv().await.unwrap(), Some(numbered(n, LEN)));
        }
        sender.await.unwrap();
        let elapsed = started.elapsed();
        let size = u64::from(MSGS) * LEN as u64;
        let expected = Duration::from_secs_f64(size as f64 / RATE as f64);
        assert!(elapsed >= expected.mul_f64(0.8), "{size} bytes in {elapsed:?}, expected about {expected:?}");
        assert!(elapsed < expected * 4, "{size} bytes in {elapsed:?}, expected about {expected:?}");
        assert!(c.error().is_none() && s.error().is_none());
        eprintln!("{size} bytes at {RATE} B/s: {elapsed:?} (ideal {expected:?})");
    })
    .await;
}

/// A receiver sent on keeps forwarding what its senders send when one of
/// them, attached from another connection, fails with that connection: the
/// others (here one on this node) still reach it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_receiver_outlives_a_failed_senders_connection() {
    within(T, async {
        let (c1, s1) = pair_with(Kind::Tcp, Config::default(), Config::default()).await;
        let (c2, s2, ctl) = faulty_client(Config::default()).await;
        let (tx, rx) = tether::mpsc::channel::<u64>(16);
        // The receiver goes over the first connection; a sender over the
        // second (the faulty one), and one stays here.
        let (onward, _) = c1.root::<tether::mpsc::Receiver<u64>, ()>().unwrap();
        let (_, mut arrivals) = s1.root::<(), tether::mpsc::Receiver<u64>>().unwrap();
        onward.send(rx).await.unwrap();
        let mut far_rx = arrivals.recv().await.unwrap().unwrap();
        let (lend, _) = c2.root::<tether::mpsc::Sender<u64>, ()>().unwrap();
        let (_, mut lent) = s2.root::<(), tether::mpsc::Sender<u64>>().unwrap();
        lend.send(tx.clone()).await.unwrap();
        let remote_tx = lent.recv().await.unwrap().unwrap();
        remote_tx.send(1).await.unwrap();
        assert_eq!(far_rx.recv().await.unwrap(), Some(1));

        ctl.cut();
        let _ = tokio::join!(c2.closed(), s2.closed());
        tx.send(2).await.unwrap();
        assert_eq!(far_rx.recv().await.unwrap(), Some(2), "the local sender still reaches the receiver");
        assert_eq!(c1.stats().unread, 0);
    })
    .await;
}
