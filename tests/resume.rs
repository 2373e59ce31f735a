//! Session resume over real TCP through a proxy that cuts the link: every
//! message is delivered exactly once and in order across the cuts, and a
//! session that cannot be resumed ends with a typed error.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::within;
use tether::transport::fault::Proxy;
use tether::{oneshot, Accepted, Acceptor, Config, ConnectionError, ConnectionEvent, SessionLost};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::unbounded_channel;

/// Cuts every link through `proxy` at random moments, waiting for each
/// resume before the next, until `receiver` finished or `max` cuts were
/// made; tells `cut_tx` the count after each. Returns the cuts made.
async fn cut_while_running(
    proxy: &Proxy,
    events: &mut tokio::sync::broadcast::Receiver<ConnectionEvent>,
    receiver: &tokio::task::JoinHandle<()>,
    cut_tx: &tokio::sync::watch::Sender<u64>,
    max: u64,
) -> u64 {
    let mut cuts = 0;
    while !receiver.is_finished() && cuts < max {
        let pause = 1 + uuid::Uuid::new_v4().as_u64_pair().0 % 4;
        tokio::time::sleep(Duration::from_millis(pause)).await;
        proxy.cut_all();
        cuts += 1;
        loop {
            match within(Duration::from_secs(10), events.recv()).await {
                Ok(ConnectionEvent::Resumed) => break,
                Ok(ConnectionEvent::SessionLost(why)) => panic!("session lost: {why}"),
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => panic!("events ended: {e}"),
            }
        }
        cut_tx.send_replace(cuts);
    }
    cuts
}

fn quick() -> Config {
    let mut cfg = Config::default();
    cfg.ping_interval = Duration::from_millis(100);
    cfg.idle_timeout = Duration::from_millis(800);
    cfg.reconnect.base = Duration::from_millis(5);
    cfg.reconnect.cap = Duration::from_millis(50);
    cfg.reconnect.give_up_after = Duration::from_secs(10);
    cfg.linger = Duration::from_secs(10);
    // Every resume proves the cookie again, on a fresh nonce (the outage
    // and fault tests run without one).
    cfg.cookie = Some(tether::Cookie::new("resume tests' cluster secret...."));
    cfg
}

/// A listener whose transports go through one acceptor; new connections
/// come out of the returned channel, resumed sessions are counted.
async fn acceptor(
    cfg: Config,
) -> (std::net::SocketAddr, tokio::sync::mpsc::UnboundedReceiver<tether::Connection>, Arc<AtomicU32>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = Acceptor::new(cfg).unwrap();
    let (tx, rx) = unbounded_channel();
    let resumed = Arc::new(AtomicU32::new(0));
    let counter = resumed.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            let counter = counter.clone();
            tokio::spawn(async move {
                match acceptor.accept(stream).await {
                    Ok(Accepted::New(conn)) => {
                        let _ = tx.send(conn);
                    }
                    Ok(_) => {
                        counter.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(_) => {}
                }
            });
        }
    });
    (addr, rx, resumed)
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Ask {
    n: u64,
    reply: oneshot::Sender<u64>,
}

/// 100,000 numbered tells and 2,000 asks while the proxy cuts the link 20+
/// times: the receiver sees 0..99,999 exactly once, in order; every ask gets
/// exactly its answer. The sender goes in batches, each after one more cut,
/// so the transfer outlasts the cuts however fast the machine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numbered_messages_survive_twenty_cuts_exactly_once() {
    within(Duration::from_secs(120), async {
        let (server_addr, mut incoming, resumed) = acceptor(quick()).await;
        let proxy = Proxy::start(server_addr).await.unwrap();
        let via = proxy.local_addr();
        let client = tether::Connection::dial(move || TcpStream::connect(via), quick()).await.unwrap();
        let server = incoming.recv().await.unwrap();
        let (tx, _) = client.root::<(u64, Option<Ask>), ()>().unwrap();
        let (_, mut rx) = server.root::<(), (u64, Option<Ask>)>().unwrap();
        let mut events = client.events();

        const N: u64 = 100_000;
        const BATCHES: u64 = 25;
        let (cut_tx, mut cut_rx) = tokio::sync::watch::channel(0u64);
        let sender = tokio::spawn(async move {
            let mut asks = Vec::new();
            for i in 0..N {
                let batch = i / (N / BATCHES);
                if i % (N / BATCHES) == 0 {
                    cut_rx.wait_for(|&cuts| cuts >= batch).await.expect("the cutter runs until the end");
                }
                let ask = if i % 50 == 0 {
                    let (reply, answer) = oneshot::channel();
                    asks.push((i, answer));
                    Some(Ask { n: i, reply })
                } else {
                    None
                };
                tx.send((i, ask)).await.unwrap();
            }
            asks
        });
        let receiver = tokio::spawn(async move {
            for expected in 0..N {
                let (i, ask) = rx.recv().await.unwrap().expect("stream open");
                assert_eq!(i, expected, "in order, none lost, none twice");
                if let Some(ask) = ask {
                    ask.reply.send(ask.n * 2).unwrap();
                }
            }
        });

        let cuts = cut_while_running(&proxy, &mut events, &receiver, &cut_tx, BATCHES).await;
        receiver.await.unwrap();
        let asks = sender.await.unwrap();
        for (n, answer) in asks {
            assert_eq!(answer.await.unwrap(), n * 2, "each ask answered exactly once");
        }
        assert!(cuts >= 20, "only {cuts} cuts happened before the transfer ended");
        assert!(resumed.load(Ordering::SeqCst) >= 20);
        assert!(client.error().is_none() && server.error().is_none());
    })
    .await;
}

/// Compressed messages across cuts: the replay buffer holds messages as
/// sent (packed), so a resume replays them packed and the receiver unpacks
/// each once. 2,000 numbered 8 KiB JSON-like messages one way (LZ4, the
/// dialer's first choice) and a packed answer to every tenth the other way
/// (Zstd, the acceptor's), while the proxy cuts the link ten times: each
/// arrives exactly once, in order, intact, and the wire carried a fraction
/// of the bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_messages_survive_cuts_exactly_once() {
    use tether::{Algorithm, Compression};
    fn body(n: u64) -> String {
        (0..100).map(|i| format!("{{\"n\":{n},\"line\":{i},\"text\":\"lorem ipsum dolor\"}},")).collect()
    }
    #[derive(serde::Serialize, serde::Deserialize)]
    struct Big {
        n: u64,
        body: String,
        reply: Option<oneshot::Sender<String>>,
    }
    within(Duration::from_secs(120), async {
        let mut dialer = quick();
        dialer.compression = Compression::new([Algorithm::Lz4, Algorithm::Zstd]);
        let mut accepting = quick();
        accepting.compression = Compression::new([Algorithm::Zstd, Algorithm::Lz4]);
        let (server_addr, mut incoming, resumed) = acceptor(accepting).await;
        let proxy = Proxy::start(server_addr).await.unwrap();
        let via = proxy.local_addr();
        let client = tether::Connection::dial(move || TcpStream::connect(via), dialer).await.unwrap();
        let server = incoming.recv().await.unwrap();
        let (tx, _) = client.root::<Big, ()>().unwrap();
        let (_, mut rx) = server.root::<(), Big>().unwrap();
        let mut events = client.events();

        const N: u64 = 2_000;
        const BATCHES: u64 = 10;
        let (cut_tx, mut cut_rx) = tokio::sync::watch::channel(0u64);
        let sender = tokio::spawn(async move {
            let mut answers = Vec::new();
            for n in 0..N {
                if n % (N / BATCHES) == 0 {
                    cut_rx.wait_for(|&cuts| cuts >= n / (N / BATCHES)).await.expect("the cutter runs until the end");
                }
                let reply = (n % 10 == 0).then(|| {
                    let (reply, answer) = oneshot::channel();
                    answers.push((n, answer));
                    reply
                });
                tx.send(Big { n, body: body(n), reply }).await.unwrap();
            }
            answers
        });
        let receiver = tokio::spawn(async move {
            for expected in 0..N {
                let big = rx.recv().await.unwrap().expect("stream open");
                assert_eq!(big.n, expected, "in order, none lost, none twice");
                assert!(big.body == body(expected), "message {expected} arrived intact");
                if let Some(reply) = big.reply {
                    reply.send(body(expected + N)).unwrap();
                }
            }
        });

        let cuts = cut_while_running(&proxy, &mut events, &receiver, &cut_tx, BATCHES).await;
        receiver.await.unwrap();
        for (n, answer) in sender.await.unwrap() {
            assert!(answer.await.unwrap() == body(n + N), "answer {n} arrived intact, once");
        }
        assert!(cuts >= 8, "only {cuts} cuts happened before the transfer ended");
        assert!(resumed.load(Ordering::SeqCst) >= 8);
        let plain = N * body(0).len() as u64;
        let (out, back) = (client.stats().bytes_out, server.stats().bytes_out);
        assert!(out * 4 < plain, "{out} bytes on the wire for {plain}");
        assert!(back * 4 < plain / 10, "{back} bytes back for {}", plain / 10);
        assert_eq!((client.stats().undecodable, server.stats().undecodable), (0, 0));
        assert!(client.error().is_none() && server.error().is_none());
    })
    .await;
}

/// The acceptor forgot the session (its linger ran out): the dialer learns
/// at its next reconnection and the connection ends with `SessionLost`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_session_ends_with_a_typed_error() {
    within(Duration::from_secs(30), async {
        let mut server_cfg = quick();
        server_cfg.linger = Duration::from_millis(50);
        let (server_addr, mut incoming, _) = acceptor(server_cfg).await;
        let proxy = Proxy::start(server_addr).await.unwrap();
        let via = proxy.local_addr();
        let client = tether::Connection::dial(move || TcpStream::connect(via), quick()).await.unwrap();
        let server = incoming.recv().await.unwrap();
        let (_, mut rx) = client.root::<(), u64>().unwrap();
        // Hold the link down longer than the linger: the server forgets.
        proxy.link().black_hole();
        let lost = server.closed().await;
        assert!(matches!(lost, ConnectionError::SessionLost(SessionLost::Expired)), "{lost:?}");
        proxy.link().heal();
        proxy.cut_all();
        let got = rx.recv().await;
        assert!(
            matches!(got, Err(tether::RecvError::Connection(ConnectionError::SessionLost(SessionLost::Expired)))),
            "{got:?}"
        );
    })
    .await;
}

/// Reconnection attempts whose dial never completes (a listener with a full
/// queue: the kernel drops the SYNs) each give up after the handshake
/// timeout, and the next attempt follows; once dials reach the server
/// again, the session resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnect_dial_that_hangs_gives_way_to_the_next_attempt() {
    within(Duration::from_secs(30), async {
        let (server_addr, mut incoming, _) = acceptor(quick()).await;
        let proxy = Proxy::start(server_addr).await.unwrap();
        let via = proxy.local_addr();
        let (_silent, _queued, nowhere) = common::silent_listener().await;

        let to_nowhere = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = to_nowhere.clone();
        let mut cfg = quick();
        cfg.handshake_timeout = Duration::from_millis(200);
        let dial = move || {
            let target = if flag.load(Ordering::SeqCst) { nowhere } else { via };
            TcpStream::connect(target)
        };
        let client = tether::Connection::dial(dial, cfg).await.unwrap();
        let _server = incoming.recv().await.unwrap();
        let mut events = client.events();
        to_nowhere.store(true, Ordering::SeqCst);
        proxy.cut_all();
        // Three attempts begin while dials hang: each earlier one timed out.
        let mut attempts = 0;
        while attempts < 3 {
            match events.recv().await {
                Ok(ConnectionEvent::Reconnecting { attempt, .. }) => attempts = attempt,
                Ok(ConnectionEvent::SessionLost(why)) => panic!("session lost: {why}"),
                Ok(_) => {}
                Err(e) => panic!("events ended: {e}"),
            }
        }
        to_nowhere.store(false, Ordering::SeqCst);
        loop {
            match events.recv().await {
                Ok(ConnectionEvent::Resumed) => break,
                Ok(ConnectionEvent::SessionLost(why)) => panic!("session lost: {why}"),
                Ok(_) => {}
                Err(e) => panic!("events ended: {e}"),
            }
        }
    })
    .await;
}
