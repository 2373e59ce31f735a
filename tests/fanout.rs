//! Broadcast channels and travelling watch senders over real connections:
//! ends that hop through a middle node, lag reported and bounded, writes
//! from any node reaching every receiver.

mod common;

use std::time::Duration;

use common::{pair, pair_with, within, Kind};
use serde::{Deserialize, Serialize};
use tether::{broadcast, mpsc, watch, Config, Connection};

const T: Duration = Duration::from_secs(20);

#[derive(Serialize, Deserialize)]
enum Msg {
    Receiver(broadcast::Receiver<Vec<u8>>),
    Sender(broadcast::Sender<Vec<u8>>),
    WatchSender(watch::Sender<u64>),
    WatchReceiver(watch::Receiver<u64>),
}

type Root = (mpsc::Sender<Msg>, mpsc::Receiver<Msg>);

fn root(c: &Connection) -> Root {
    c.root().unwrap()
}

async fn next(r: &mut Root) -> Msg {
    r.1.recv().await.unwrap().unwrap()
}

/// Three nodes in a line, C - B - A: the roots of B's link to C and A's
/// link to B, from each end.
struct Line {
    c: Root,
    b_from_c: Root,
    b_to_a: Root,
    a: Root,
    _conns: [Connection; 4],
}

async fn line(to_a: (Config, Config)) -> Line {
    let (bc_b, bc_c) = pair(Kind::Tcp).await;
    let (ab_a, ab_b) = pair_with(Kind::Tcp, to_a.0, to_a.1).await;
    Line {
        c: root(&bc_c),
        b_from_c: root(&bc_b),
        b_to_a: root(&ab_b),
        a: root(&ab_a),
        _conns: [bc_b, bc_c, ab_a, ab_b],
    }
}

fn value(n: u32) -> Vec<u8> {
    n.to_be_bytes().to_vec()
}

async fn expect_all(rx: &mut broadcast::Receiver<Vec<u8>>, from: u32, to: u32, who: &str) {
    for n in from..to {
        assert_eq!(rx.recv().await.unwrap(), value(n), "{who} gets every value in order");
    }
}

/// C makes the channel; receivers live on C, on B, and on A (sent through
/// B); a sender sent to A through B, and a receiver A subscribes through
/// it, work like C's own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_ends_work_on_every_node_of_a_line() {
    within(T, async {
        let mut l = line(Default::default()).await;
        let (tx, mut at_c) = broadcast::channel(1024);

        l.c.0.send(Msg::Receiver(tx.subscribe())).await.unwrap();
        let Msg::Receiver(mut at_b) = next(&mut l.b_from_c).await else { panic!() };
        l.c.0.send(Msg::Receiver(tx.subscribe())).await.unwrap();
        let Msg::Receiver(via_b) = next(&mut l.b_from_c).await else { panic!() };
        l.b_to_a.0.send(Msg::Receiver(via_b)).await.unwrap();
        let Msg::Receiver(mut at_a) = next(&mut l.a).await else { panic!() };

        for n in 0..500 {
            tx.send(value(n)).await.unwrap();
        }
        expect_all(&mut at_c, 0, 500, "C").await;
        expect_all(&mut at_b, 0, 500, "B").await;
        expect_all(&mut at_a, 0, 500, "A, through B").await;

        // A sender travels C -> B -> A; A subscribes through it.
        l.c.0.send(Msg::Sender(tx.clone())).await.unwrap();
        let Msg::Sender(via_b) = next(&mut l.b_from_c).await else { panic!() };
        l.b_to_a.0.send(Msg::Sender(via_b)).await.unwrap();
        let Msg::Sender(remote_tx) = next(&mut l.a).await else { panic!() };
        // The subscription reaches C before the sends through the same
        // sender that follow it.
        let mut subscribed_at_a = remote_tx.subscribe();
        for n in 500..1000 {
            remote_tx.send(value(n)).await.unwrap();
        }
        expect_all(&mut at_c, 500, 1000, "C, from A's sender").await;
        expect_all(&mut at_b, 500, 1000, "B, from A's sender").await;
        expect_all(&mut at_a, 500, 1000, "A, from its own sender").await;
        expect_all(&mut subscribed_at_a, 500, 1000, "A's subscription").await;

        // Every sender gone, on every node: each receiver reads what is left,
        // then hears that the channel is closed.
        drop((tx, remote_tx));
        for (rx, who) in
            [(&mut at_c, "C"), (&mut at_b, "B"), (&mut at_a, "A"), (&mut subscribed_at_a, "A's subscription")]
        {
            assert!(matches!(rx.recv().await, Err(broadcast::RecvError::Closed)), "{who} is closed");
        }
    })
    .await;
}

/// A remote receiver that does not read falls behind; the senders never
/// wait for it, what it holds is bounded by the capacity and the link's
/// windows, and it is told exactly how many values it missed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_remote_receiver_is_told_what_it_missed_and_holds_a_bounded_amount() {
    within(T, async {
        const N: u32 = 5000;
        const SIZE: usize = 1024;
        const CAPACITY: usize = 16;
        let mut small = Config::default();
        small.port_window = 64 * 1024;
        small.send_buffer = 64 * 1024;
        let (c, s) = pair_with(Kind::Tcp, small.clone(), small.clone()).await;
        let (mut cr, mut sr) = (root(&c), root(&s));
        let (tx, _) = broadcast::channel(CAPACITY);
        cr.0.send(Msg::Receiver(tx.subscribe())).await.unwrap();
        let Msg::Receiver(mut far) = next(&mut sr).await else { panic!() };
        let payload = |n: u32| {
            let mut v = vec![0u8; SIZE];
            v[..4].copy_from_slice(&n.to_be_bytes());
            v
        };
        for n in 0..N {
            tx.send(payload(n)).await.unwrap();
        }
        drop(tx);

        let (mut values, mut missed, mut last) = (0u64, 0u64, None::<u32>);
        loop {
            match far.recv().await {
                Ok(v) => {
                    let n = u32::from_be_bytes(v[..4].try_into().unwrap());
                    assert!(last.is_none_or(|l| n > l), "in order: {n} after {last:?}");
                    last = Some(n);
                    values += 1;
                }
                Err(broadcast::RecvError::Lagged(k)) => missed += k,
                Err(broadcast::RecvError::Closed) => break,
                Err(e) => panic!("unexpected {e}"),
            }
        }
        assert_eq!(values + missed, N as u64, "every value is either received or counted as missed");
        assert_eq!(last, Some(N - 1), "the newest value is never the one missed");
        let in_flight = (small.port_window + small.send_buffer) as u64 / SIZE as u64;
        assert!(
            values <= CAPACITY as u64 + in_flight + 2,
            "{values} values held for one receiver: more than the capacity and the windows allow"
        );
        let _ = &mut cr;
    })
    .await;
}

/// A watch sender travels C -> B -> A. Writes from A reach C's receivers
/// and receivers subscribed on B; a burst of writes leaves the last in
/// place; once every sender is gone the receivers are told.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_travelled_watch_sender_writes_to_the_origin_from_any_node() {
    within(T, async {
        let mut l = line(Default::default()).await;
        let (wtx, mut at_c) = watch::channel(7u64);

        l.c.0.send(Msg::WatchSender(wtx)).await.unwrap();
        let Msg::WatchSender(at_b) = next(&mut l.b_from_c).await else { panic!() };
        let mut subscribed_at_b = at_b.subscribe();
        assert_eq!(*subscribed_at_b.borrow(), 7, "starts with the value the sender arrived with");
        l.b_to_a.0.send(Msg::WatchSender(at_b)).await.unwrap();
        let Msg::WatchSender(at_a) = next(&mut l.a).await else { panic!() };

        assert_eq!(at_a.send_replace(8), 7, "replaces the value it arrived with");
        at_c.changed().await.unwrap();
        assert_eq!(*at_c.borrow_and_update(), 8, "C sees A's write");
        while *subscribed_at_b.borrow_and_update() != 8 {
            subscribed_at_b.changed().await.unwrap();
        }

        // A receiver of the origin, sent to A, follows A's writes too.
        l.c.0.send(Msg::WatchReceiver(at_c.clone())).await.unwrap();
        let Msg::WatchReceiver(via_b) = next(&mut l.b_from_c).await else { panic!() };
        l.b_to_a.0.send(Msg::WatchReceiver(via_b)).await.unwrap();
        let Msg::WatchReceiver(mut at_a_rx) = next(&mut l.a).await else { panic!() };
        for n in 100..=1000 {
            at_a.send_replace(n);
        }
        for rx in [&mut at_c, &mut subscribed_at_b, &mut at_a_rx] {
            while *rx.borrow_and_update() != 1000 {
                rx.changed().await.unwrap();
            }
        }

        drop(at_a);
        for rx in [&mut at_c, &mut subscribed_at_b, &mut at_a_rx] {
            while rx.changed().await.is_ok() {}
        }
    })
    .await;
}

/// A receiver subscribed through a travelled sender never goes back past a
/// write that sender made before subscribing: the origin answers after
/// taking that write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_through_a_travelled_sender_follows_its_earlier_writes() {
    within(T, async {
        let (c, s) = pair(Kind::Tcp).await;
        let (cr, mut sr) = (root(&c), root(&s));
        let (wtx, _at_origin) = watch::channel(0u64);
        cr.0.send(Msg::WatchSender(wtx)).await.unwrap();
        let Msg::WatchSender(far) = next(&mut sr).await else { panic!() };
        for i in 1..=100u64 {
            far.send_replace(i);
            let mut subscribed = far.subscribe();
            // Its first value is seen from the start; the origin's answer
            // is its first change (awaited without marking anything seen,
            // as the answer may already be in).
            assert_eq!(*subscribed.borrow(), i, "starts at what this sender knows");
            subscribed.changed().await.unwrap();
            assert_eq!(*subscribed.borrow_and_update(), i, "the origin's answer, after the write");
        }
        // Once the origin is gone, a subscription is closed at once.
        c.close().await;
        far.closed().await;
        let mut late = far.subscribe();
        assert!(late.changed().await.is_err(), "nothing will come");
    })
    .await;
}
