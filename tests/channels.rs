//! Remote channels over real transports: ends inside messages, forwarding
//! through a middle node, drop semantics and port reclamation.

mod common;

use std::time::Duration;

use common::{eventually, pair, within, Kind, ALL};
use serde::{Deserialize, Serialize};
use tether::{mpsc, oneshot, watch, Connection};

const T: Duration = Duration::from_secs(20);

#[derive(Serialize, Deserialize)]
enum Msg {
    Ask { question: String, reply: oneshot::Sender<String> },
    Senders(Vec<mpsc::Sender<u64>>),
    Receiver(Option<mpsc::Receiver<u64>>),
    Watch(watch::Receiver<String>),
    Ping(u32),
    Pong(u32),
}

/// One round trip on the root channel: everything either side queued
/// before it has been processed by the other.
async fn sync(a: &(mpsc::Sender<Msg>, mpsc::Receiver<Msg>), b: &mut (mpsc::Sender<Msg>, mpsc::Receiver<Msg>), n: u32) {
    a.0.send(Msg::Ping(n)).await.unwrap();
    match b.1.recv().await.unwrap().unwrap() {
        Msg::Ping(m) => assert_eq!(m, n),
        _ => panic!("expected a ping"),
    }
    b.0.send(Msg::Pong(n)).await.unwrap();
}

async fn roots(
    c: &Connection,
    s: &Connection,
) -> ((mpsc::Sender<Msg>, mpsc::Receiver<Msg>), (mpsc::Sender<Msg>, mpsc::Receiver<Msg>)) {
    (c.root().unwrap(), s.root().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ends_inside_messages_work_on_every_transport() {
    for kind in ALL {
        within(T, async {
            let (c, s) = pair(kind).await;
            let (mut cr, mut sr) = roots(&c, &s).await;
            assert!(c.root::<Msg, Msg>().is_none(), "the root channel is taken once");

            // A oneshot sender inside an enum variant: the reply comes back.
            let (tx, rx) = oneshot::channel();
            cr.0.send(Msg::Ask { question: "who".into(), reply: tx }).await.unwrap();
            let Some(Msg::Ask { question, reply }) = sr.1.recv().await.unwrap() else { panic!() };
            reply.send(format!("{question}: server")).unwrap();
            assert_eq!(rx.await.unwrap(), "who: server");

            // Several senders inside a Vec, each live on arrival.
            let (tx1, mut rx1) = mpsc::channel(8);
            let (tx2, mut rx2) = mpsc::channel(8);
            sr.0.send(Msg::Senders(vec![tx1, tx2])).await.unwrap();
            let Some(Msg::Senders(senders)) = cr.1.recv().await.unwrap() else { panic!() };
            for (i, tx) in senders.iter().enumerate() {
                for n in 0..100 {
                    tx.send(i as u64 * 1000 + n).await.unwrap();
                }
            }
            for n in 0..100 {
                assert_eq!(rx1.recv().await.unwrap(), Some(n));
                assert_eq!(rx2.recv().await.unwrap(), Some(1000 + n));
            }

            // A receiver inside an Option: the local senders now feed the peer.
            let (tx, rx) = mpsc::channel(8);
            cr.0.send(Msg::Receiver(Some(rx))).await.unwrap();
            let Some(Msg::Receiver(Some(mut remote_rx))) = sr.1.recv().await.unwrap() else { panic!() };
            for n in 0..500 {
                tx.send(n).await.unwrap();
            }
            drop(tx);
            for n in 0..500 {
                assert_eq!(remote_rx.recv().await.unwrap(), Some(n));
            }
            assert_eq!(remote_rx.recv().await.unwrap(), None, "{kind:?}: stream ends when senders drop");
            drop(senders);
            sync(&cr, &mut sr, 1).await;
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_receiver_follows_the_value_across_a_connection() {
    within(T, async {
        let (c, s) = pair(Kind::Tcp).await;
        let (cr, mut sr) = roots(&c, &s).await;
        let (wtx, wrx) = watch::channel("one".to_string());
        cr.0.send(Msg::Watch(wrx)).await.unwrap();
        let Some(Msg::Watch(mut remote)) = sr.1.recv().await.unwrap() else { panic!() };
        assert_eq!(*remote.borrow(), "one", "arrives with the current value");
        wtx.send_replace("two".into());
        remote.changed().await.unwrap();
        assert_eq!(*remote.borrow_and_update(), "two");
        drop(wtx);
        assert!(remote.changed().await.is_err(), "sender gone ends the watch");
    })
    .await;
}

/// C creates a channel and gives the sender to B; B passes it on to A; A's
/// messages reach C through B. The same for a receiver going C -> B -> A.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ends_forwarded_through_a_middle_node_still_work() {
    within(T, async {
        let (ab_a, ab_b) = pair(Kind::Tcp).await;
        let (bc_b, bc_c) = pair(Kind::Unix).await;
        let (a_root, b_root_a) = roots(&ab_a, &ab_b).await;
        let (mut b_root_c, c_root) = roots(&bc_b, &bc_c).await;
        let _ = &a_root;

        let (tx, mut rx) = mpsc::channel::<u64>(4);
        c_root.0.send(Msg::Senders(vec![tx])).await.unwrap();
        let Some(Msg::Senders(at_b)) = b_root_c.1.recv().await.unwrap() else { panic!() };
        b_root_a.0.send(Msg::Senders(at_b)).await.unwrap();
        let mut a_root = a_root;
        let Some(Msg::Senders(mut at_a)) = a_root.1.recv().await.unwrap() else { panic!() };
        let tx = at_a.pop().unwrap();
        let sender = tokio::spawn(async move {
            for n in 0..2000 {
                tx.send(n).await.unwrap();
            }
        });
        for n in 0..2000 {
            assert_eq!(rx.recv().await.unwrap(), Some(n), "in order through the middle node");
        }
        sender.await.unwrap();
        assert_eq!(rx.recv().await.unwrap(), None, "the end of the stream is forwarded too");

        let (tx, rx) = mpsc::channel::<u64>(4);
        c_root.0.send(Msg::Receiver(Some(rx))).await.unwrap();
        let Some(Msg::Receiver(at_b)) = b_root_c.1.recv().await.unwrap() else { panic!() };
        b_root_a.0.send(Msg::Receiver(at_b)).await.unwrap();
        let Some(Msg::Receiver(Some(mut rx))) = a_root.1.recv().await.unwrap() else { panic!() };
        for n in 0..100 {
            tx.send(n).await.unwrap();
            assert_eq!(rx.recv().await.unwrap(), Some(n));
        }
        drop(rx);
        within(Duration::from_secs(5), tx.closed()).await;
        assert!(tx.send(1).await.unwrap_err().is_closed(), "dropping the far receiver closes the origin");
    })
    .await;
}

/// A sender that sent here and then travels: its messages sent here come
/// first, even when those it sends from the far side arrived before the
/// receiver read anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_that_travels_after_sending_keeps_its_order() {
    within(T, async {
        let (c, s) = pair(Kind::Tcp).await;
        let (mut cr, mut sr) = roots(&c, &s).await;
        let (tx, mut rx) = mpsc::channel::<u64>(200);
        for n in 0..100 {
            tx.send(n).await.unwrap();
        }
        cr.0.send(Msg::Senders(vec![tx])).await.unwrap();
        let Some(Msg::Senders(mut far)) = sr.1.recv().await.unwrap() else { panic!() };
        let far = far.pop().unwrap();
        for n in 100..200 {
            far.send(n).await.unwrap();
        }
        drop(far);
        eventually("the far messages arrived", T, || c.stats().recv_buffered > 0 && s.stats().send_queued == 0).await;
        for n in 0..200 {
            assert_eq!(rx.recv().await.unwrap(), Some(n), "sent here first, then from far");
        }
        assert_eq!(rx.recv().await.unwrap(), None);
        let _ = &mut cr;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_ends_closes_the_other_side() {
    within(T, async {
        let (c, s) = pair(Kind::Tcp).await;
        let (mut cr, mut sr) = roots(&c, &s).await;

        // Receiver dropped on the far side: sends fail with Closed.
        let (tx, rx) = mpsc::channel::<u64>(4);
        cr.0.send(Msg::Receiver(Some(rx))).await.unwrap();
        let Some(Msg::Receiver(Some(remote_rx))) = sr.1.recv().await.unwrap() else { panic!() };
        drop(remote_rx);
        within(Duration::from_secs(5), tx.closed()).await;
        assert!(matches!(tx.send(7).await, Err(mpsc::SendError::Closed(7))));

        // Every sender dropped on the far side: the stream ends.
        let (tx, mut rx) = mpsc::channel::<u64>(4);
        sr.0.send(Msg::Senders(vec![tx.clone(), tx])).await.unwrap();
        let Some(Msg::Senders(remote)) = cr.1.recv().await.unwrap() else { panic!() };
        remote[0].send(1).await.unwrap();
        drop(remote);
        assert_eq!(rx.recv().await.unwrap(), Some(1));
        assert_eq!(rx.recv().await.unwrap(), None);

        // A oneshot sender dropped unused: the receiver learns at once.
        let (otx, orx) = oneshot::channel::<String>();
        cr.0.send(Msg::Ask { question: "?".into(), reply: otx }).await.unwrap();
        let Some(Msg::Ask { reply, .. }) = sr.1.recv().await.unwrap() else { panic!() };
        drop(reply);
        assert!(matches!(within(Duration::from_secs(5), orx).await, Err(oneshot::RecvError::Dropped)));
    })
    .await;
}

/// A receiver takes a few small messages off the connection ahead of the
/// application; dropped with such messages unread, it still closes the
/// ends they carry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_receiver_closes_the_ends_of_messages_it_read_ahead() {
    within(T, async {
        let (c, s) = pair(Kind::Tcp).await;
        let (cr, mut sr) = roots(&c, &s).await;
        let mut answers = Vec::new();
        for i in 0..10 {
            let (reply, answer) = oneshot::channel::<String>();
            answers.push(answer);
            cr.0.send(Msg::Ask { question: format!("q{i}"), reply }).await.unwrap();
        }
        // All ten are in (each announced its port) before the first read,
        // which then takes the other nine along.
        eventually("the ten asks arrived", Duration::from_secs(5), || s.stats().open_ports == 2 + 10).await;
        let Some(Msg::Ask { question, reply }) = sr.1.recv().await.unwrap() else { panic!("an ask") };
        assert_eq!(question, "q0");
        reply.send("a0".into()).unwrap();
        drop(sr);
        let mut answers = answers.into_iter();
        assert_eq!(within(Duration::from_secs(5), answers.next().unwrap()).await.unwrap(), "a0");
        for answer in answers {
            let dropped = within(Duration::from_secs(5), answer).await;
            assert!(matches!(dropped, Err(oneshot::RecvError::Dropped)), "{dropped:?}");
        }
    })
    .await;
}

/// 100,000 channel ends sent and dropped leave the open-port count where
/// it started, on both sides.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_thousand_ends_are_all_reclaimed() {
    within(Duration::from_secs(120), async {
        let (c, s) = pair(Kind::Tcp).await;
        let (mut cr, mut sr) = roots(&c, &s).await;
        let start = (c.stats().open_ports, s.stats().open_ports);
        assert_eq!(start, (2, 2));
        const N: u32 = 100_000;
        let consumer = tokio::spawn(async move {
            for _ in 0..N / 2 {
                match sr.1.recv().await.unwrap().unwrap() {
                    Msg::Senders(v) => drop(v),
                    Msg::Receiver(r) => drop(r),
                    _ => panic!("unexpected message"),
                }
            }
            sr
        });
        let mut peak = 0;
        for i in 0..N / 2 {
            // Two ends per message: a sender whose receiver stays here, and
            // a receiver whose senders stay here; both local halves dropped.
            let (tx, rx) = mpsc::channel::<u64>(1);
            let (tx2, rx2) = mpsc::channel::<u64>(1);
            let msg = if i % 2 == 0 { Msg::Senders(vec![tx]) } else { Msg::Receiver(Some(rx2)) };
            cr.0.send(msg).await.unwrap();
            drop((rx, tx2));
            peak = peak.max(c.stats().open_ports);
        }
        let mut sr = consumer.await.unwrap();
        sync(&cr, &mut sr, 1).await;
        let _ = cr.1.recv().await.unwrap();
        eventually("every port is released on both sides", Duration::from_secs(20), || {
            (c.stats().open_ports, s.stats().open_ports) == start
        })
        .await;
        assert!(peak < 20_000, "ports are released while the test runs (peak {peak})");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_connection_fails_pending_operations() {
    within(T, async {
        let (c, s) = pair(Kind::Tcp).await;
        let (mut cr, sr) = roots(&c, &s).await;
        let (tx, rx) = mpsc::channel::<u64>(1);
        sr.0.send(Msg::Receiver(Some(rx))).await.unwrap();
        let Some(Msg::Receiver(Some(mut remote_rx))) = cr.1.recv().await.unwrap() else { panic!() };
        let waiting = tokio::spawn(async move { remote_rx.recv().await });
        within(Duration::from_secs(5), s.close()).await;
        let got = within(Duration::from_secs(5), waiting).await.unwrap();
        assert!(matches!(got, Ok(None)), "a graceful close ends pending receives: {got:?}");
        within(Duration::from_secs(5), tx.closed()).await;
        assert!(cr.0.send(Msg::Ping(1)).await.unwrap_err().is_closed());
        // Closed here, told by the peer there.
        assert!(matches!(s.error(), Some(tether::ConnectionError::Closed)), "{:?}", s.error());
        assert!(matches!(c.error(), Some(tether::ConnectionError::PeerClosed { .. })), "{:?}", c.error());
        drop(sr);
    })
    .await;
}

/// Large messages of varied sizes, on two ports at once, arrive intact:
/// encoding buffers are recycled once the mux is done with them, and a
/// receiver reassembles each message in the buffer of the one before, so
/// any buffer reused too early would show up here as corrupted bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_of_large_messages_arrives_intact() {
    use serde_bytes::ByteBuf;
    const SIZES: [usize; 8] =
        [70 << 10, 1536 << 10, 300 << 10, (2 << 20) + 4096, 100 << 10, 1 << 20, 64 << 10, 900 << 10];
    fn pattern(stream: u8, i: usize, len: usize) -> Vec<u8> {
        (0..len).map(|j| (j as u8).wrapping_mul(7) ^ (i as u8).wrapping_mul(31) ^ stream).collect()
    }
    within(T, async {
        let (c, s) = pair(Kind::Tcp).await;
        let (c_out, _c_in) = c.root::<Vec<mpsc::Sender<ByteBuf>>, ()>().unwrap();
        let (_s_out, mut s_in) = s.root::<(), Vec<mpsc::Sender<ByteBuf>>>().unwrap();
        let (tx_a, mut rx_a) = mpsc::channel(4);
        let (tx_b, mut rx_b) = mpsc::channel(4);
        c_out.send(vec![tx_a, tx_b]).await.unwrap();
        let senders = s_in.recv().await.unwrap().unwrap();
        let rounds = 5;
        let mut tasks = Vec::new();
        for (stream, tx) in senders.into_iter().enumerate() {
            tasks.push(tokio::spawn(async move {
                for i in 0..rounds * SIZES.len() {
                    let len = SIZES[(i + stream * 3) % SIZES.len()];
                    tx.send(ByteBuf::from(pattern(stream as u8, i, len))).await.unwrap();
                }
            }));
        }
        for i in 0..rounds * SIZES.len() {
            for (stream, rx) in [&mut rx_a, &mut rx_b].into_iter().enumerate() {
                let got = rx.recv().await.unwrap().unwrap();
                let len = SIZES[(i + stream * 3) % SIZES.len()];
                assert!(got.as_slice() == pattern(stream as u8, i, len), "stream {stream}, message {i} corrupted");
            }
        }
        for t in tasks {
            t.await.unwrap();
        }
    })
    .await;
}

/// A long message (at least 4 MiB) is taken off its port in one poll of the
/// receive and decoded in a later one, so the driver, woken by taking it off
/// (to return credit), runs first and the connection goes on meanwhile. On a
/// multi-threaded runtime a decode in the same poll would keep that driver
/// in a slot of the decoding worker that no other worker may take (see
/// `a_long_decode_does_not_hold_up_other_channels`, which shows that end to
/// end, but catches a receiver decoding at once only in some runs). Here
/// the window is larger than the message, so all of it is in before the
/// test polls the receive by hand: the outcome does not depend on the
/// scheduler.
#[tokio::test]
async fn a_long_message_is_decoded_only_after_the_connection_went_on() {
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

    /// Decodes of `Counted` so far.
    static DECODED: AtomicUsize = AtomicUsize::new(0);

    #[derive(Serialize)]
    struct Counted(#[serde(with = "serde_bytes")] Vec<u8>);
    impl<'de> Deserialize<'de> for Counted {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            let bytes = serde_bytes::ByteBuf::deserialize(d)?;
            DECODED.fetch_add(1, SeqCst);
            Ok(Counted(bytes.into_vec()))
        }
    }

    within(T, async {
        let big_len = 5 << 20;
        let mut cfg = tether::Config::default();
        cfg.port_window = 8 << 20;
        cfg.conn_window = 8 << 20;
        let (c, s) = common::pair_with(Kind::Tcp, cfg.clone(), cfg).await;
        let (big, mut c_in) = c.root::<Counted, oneshot::Sender<u32>>().unwrap();
        let (s_out, mut big_rx) = s.root::<oneshot::Sender<u32>, Counted>().unwrap();
        big.send(Counted(vec![7; big_len])).await.unwrap();
        eventually("the long message is in", Duration::from_secs(10), || s.stats().recv_buffered >= big_len).await;

        let mut recv = std::pin::pin!(big_rx.recv());
        let first = futures::poll!(&mut recv);
        assert!(first.is_pending(), "decoded in the poll that took it off the port");
        assert_eq!(DECODED.load(SeqCst), 0);
        assert_eq!(s.stats().recv_buffered, 0, "the first poll took the message off its port");
        // The connection goes on before the decode: a round trip from the
        // receiving side completes.
        let (reply, answer) = oneshot::channel();
        s_out.send(reply).await.unwrap();
        c_in.recv().await.unwrap().unwrap().send(1).unwrap();
        assert_eq!(answer.await.unwrap(), 1);
        assert_eq!(DECODED.load(SeqCst), 0, "decoded before the next poll");

        let got = recv.await.unwrap().unwrap();
        assert_eq!(got.0.len(), big_len);
        assert_eq!(DECODED.load(SeqCst), 1);
    })
    .await;
}

/// While a long message decodes, the connection goes on: a round trip on
/// another channel completes. The decode here waits (on a gate the test
/// opens) until that round trip is done, so a receiver that held up the
/// connection's driver while decoding would never see it, and the test
/// would time out. Whether a receiver decoding at once gets the driver
/// stuck behind it depends on which worker woke the driver last, so this
/// catches that only in some runs;
/// `a_long_message_is_decoded_only_after_the_connection_went_on` catches it
/// every time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_decode_does_not_hold_up_other_channels() {
    use std::sync::mpsc as std_mpsc;
    use std::sync::Mutex;

    /// Told when the decode started; waited on before it ends.
    static STARTED: Mutex<Option<tokio::sync::oneshot::Sender<()>>> = Mutex::new(None);
    static GATE: Mutex<Option<std_mpsc::Receiver<()>>> = Mutex::new(None);

    /// Bytes whose decode blocks until the gate opens.
    #[derive(Serialize)]
    struct Gated(#[serde(with = "serde_bytes")] Vec<u8>);
    impl<'de> Deserialize<'de> for Gated {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            let bytes = serde_bytes::ByteBuf::deserialize(d)?;
            let _ = STARTED.lock().unwrap().take().expect("one gated decode").send(());
            let gate = GATE.lock().unwrap().take().expect("one gated decode");
            gate.recv().expect("the test opens the gate");
            Ok(Gated(bytes.into_vec()))
        }
    }
    type Echo = (u32, oneshot::Sender<u32>);

    within(T, async {
        let (started_tx, started) = tokio::sync::oneshot::channel();
        *STARTED.lock().unwrap() = Some(started_tx);
        let (open, gate) = std_mpsc::channel();
        *GATE.lock().unwrap() = Some(gate);
        let (c, s) = pair(Kind::Tcp).await;
        let (_c_out, mut c_in) = c.root::<(), (mpsc::Sender<Gated>, mpsc::Sender<Echo>)>().unwrap();
        let (s_out, _s_in) = s.root::<(mpsc::Sender<Gated>, mpsc::Sender<Echo>), ()>().unwrap();
        let (big_tx, mut big_rx) = mpsc::channel::<Gated>(1);
        let (echo_tx, mut echo_rx) = mpsc::channel::<Echo>(8);
        s_out.send((big_tx, echo_tx)).await.unwrap();
        tokio::spawn(async move {
            while let Ok(Some((n, reply))) = echo_rx.recv().await {
                let _ = reply.send(n);
            }
        });
        let big_len = 5 << 20;
        let decoded = tokio::spawn(async move { big_rx.recv().await.unwrap().unwrap().0.len() });
        let (big, echo) = c_in.recv().await.unwrap().unwrap();
        big.send(Gated(vec![7; big_len])).await.unwrap();
        started.await.expect("the decode started");
        // The decode is under way and waits for this round trip.
        let (reply, answer) = oneshot::channel();
        echo.send((1, reply)).await.unwrap();
        assert_eq!(answer.await.unwrap(), 1);
        open.send(()).unwrap();
        assert_eq!(decoded.await.unwrap(), big_len);
    })
    .await;
}

/// A connection's stats count the messages and bytes each way, each once,
/// and measure the round trip with its pings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_count_messages_and_bytes_and_the_round_trip() {
    within(T, async {
        let mut cfg = tether::Config::default();
        cfg.ping_interval = Duration::from_millis(20);
        let (c, s) = common::pair_with(Kind::Tcp, cfg.clone(), cfg).await;
        let (tx, _) = c.root::<Vec<u8>, Vec<u8>>().unwrap();
        let (_, mut rx) = s.root::<Vec<u8>, Vec<u8>>().unwrap();
        let (c0, s0) = (c.stats(), s.stats());

        const N: u64 = 100;
        for _ in 0..N {
            tx.send(vec![7; 1000]).await.unwrap();
        }
        for _ in 0..N {
            assert_eq!(rx.recv().await.unwrap().unwrap().len(), 1000);
        }
        let (c1, s1) = (c.stats(), s.stats());
        assert_eq!((c1.messages_out - c0.messages_out, s1.messages_in - s0.messages_in), (N, N));
        assert_eq!((c1.messages_in - c0.messages_in, s1.messages_out - s0.messages_out), (0, 0));
        let out = c1.bytes_out - c0.bytes_out;
        assert!((N * 1000..N * 1010).contains(&out), "{out} bytes for {N} messages of 1000");
        assert_eq!(s1.bytes_in - s0.bytes_in, out, "received as many bytes as were sent");

        eventually("a ping is answered", T, || c.stats().rtt.is_some()).await;
        let rtt = c.stats().rtt.unwrap();
        assert!(rtt < Duration::from_secs(1), "{rtt:?}");
        assert_eq!((c.stats().reconnects, c.stats().resumes), (0, 0));
        assert_eq!((c.stats().full, c.stats().undecodable), (0, 0));
    })
    .await;
}

/// A try-send that finds the send buffers full is counted in `full`, once
/// per refusal, and a send that waits for room once; a message that does not decode is counted in `undecodable`,
/// and its channel goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_count_sends_refused_full_and_messages_that_do_not_decode() {
    within(T, async {
        // A 4 KiB window and send buffer: a receiver that does not read
        // holds up the sender after a few messages.
        let mut cfg = tether::Config::default();
        (cfg.chunk_size, cfg.port_window, cfg.conn_window) = (1024, 4096, 4096);
        (cfg.send_buffer, cfg.conn_send_buffer) = (4096, 4096);
        let (c, s) = common::pair_with(Kind::Tcp, cfg.clone(), cfg).await;
        let (tx, mut wrong) = c.root::<Vec<u8>, bool>().unwrap();
        let (answer, _unread) = s.root::<u8, Vec<u8>>().unwrap();

        let mut accepted = 0;
        let refused = loop {
            match tx.try_send(vec![7; 1000]) {
                Ok(()) => accepted += 1,
                Err(mpsc::SendError::Full(m)) => break m,
                Err(e) => panic!("{e:?}"),
            }
            assert!(accepted < 100, "the window and the buffer hold no more than 8 KiB");
        };
        assert_eq!((c.stats().full, c.stats().messages_out), (1, accepted));
        assert!(tx.try_send(refused).is_err());
        assert_eq!((c.stats().full, c.stats().messages_out), (2, accepted), "each refusal counts");

        // A send that waits for room counts once, however often it is polled
        // while it waits (here by a timer beside it in a select). First the
        // peer's window fills (nothing reads it) and the buffer behind it.
        eventually("the window and the buffer are full", T, || {
            while tx.try_send(vec![7; 1000]).is_ok() {}
            s.stats().recv_buffered >= 4000
        })
        .await;
        while tx.try_send(vec![7; 1000]).is_ok() {}
        let full = c.stats().full;
        let waiting = tx.send(vec![7; 1000]);
        tokio::pin!(waiting);
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        for _ in 0..20 {
            tokio::select! {
                biased;
                sent = &mut waiting => panic!("sent with the window full: {sent:?}"),
                _ = tick.tick() => {}
            }
        }
        assert_eq!(c.stats().full, full + 1, "one send waited, polled 20 times");

        // 7 is no bool: dropped and counted; the next message arrives.
        answer.send(7).await.unwrap();
        answer.send(1).await.unwrap();
        assert!(matches!(wrong.recv().await, Err(tether::RecvError::Decode(_))));
        assert!(matches!(wrong.recv().await, Ok(Some(true))));
        assert_eq!((c.stats().undecodable, s.stats().undecodable), (1, 0));
    })
    .await;
}

/// A receiver dropped with messages waiting counts them as unread on its
/// connection: those it had read ahead and those the mux still held. So
/// are the messages sent on until the sender hears of the close, each once:
/// where it arrived, or where it waited to be sent (here, the sender's
/// node also forwards from a local queue, since the receiver was sent on).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_a_dropped_receiver_never_read_are_counted() {
    within(T, async {
        let (c, s) = pair(Kind::Tcp).await;
        let (root, _) = c.root::<mpsc::Receiver<Vec<u8>>, ()>().unwrap();
        let (_, mut incoming) = s.root::<(), mpsc::Receiver<Vec<u8>>>().unwrap();
        let (tx, rx) = mpsc::channel::<Vec<u8>>(16);
        root.send(rx).await.unwrap();
        let mut rx = incoming.recv().await.unwrap().unwrap();
        let base = s.stats().messages_in;
        let mut sent = 0;
        for size in [10, 100_000, 10, 10, 200_000, 10] {
            tx.send(vec![1; size]).await.unwrap();
            sent += 1;
        }
        eventually("all arrived", T, || s.stats().messages_in - base == sent).await;
        assert_eq!(rx.recv().await.unwrap().unwrap().len(), 10);
        assert_eq!(s.stats().unread, 0);
        drop(rx);
        assert_eq!(s.stats().unread, sent - 1, "five arrived and were never read");

        while tx.send(vec![2; 1000]).await.is_ok() {
            sent += 1;
        }
        eventually("every message is read or counted unread once", T, || {
            1 + s.stats().unread + c.stats().unread == sent
        })
        .await;
    })
    .await;
}
