//! Backpressure and fairness over real TCP: a stalled receiver bounds the
//! sender's memory, and a large transfer never blocks a small exchange.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{pair_with, within, Kind};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use tether::{mpsc, Config};

#[derive(Serialize, Deserialize)]
struct Block {
    seq: u32,
    data: ByteBuf,
}

#[derive(Serialize, Deserialize)]
enum Setup {
    Blocks(mpsc::Receiver<Block>),
    Pings(mpsc::Receiver<u32>, mpsc::Sender<u32>),
}

const MIB: usize = 1024 * 1024;

fn small_windows() -> Config {
    let mut cfg = Config::default();
    cfg.port_window = 256 * 1024;
    cfg.send_buffer = 256 * 1024;
    cfg.conn_window = 1024 * 1024;
    cfg
}

/// 1 GiB offered to a receiver that stops reading: what is queued on both
/// sides never exceeds the windows, and everything arrives, in order, once
/// the receiver reads again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_receiver_bounds_memory_on_both_sides() {
    within(Duration::from_secs(300), async {
        let cfg = small_windows();
        let (c, s) = pair_with(Kind::Tcp, cfg.clone(), cfg.clone()).await;
        let (croot, _) = c.root::<Setup, Setup>().unwrap();
        let (_, mut sroot) = s.root::<Setup, Setup>().unwrap();
        let (tx, rx) = mpsc::channel::<Block>(1);
        croot.send(Setup::Blocks(rx)).await.unwrap();
        let Some(Setup::Blocks(mut remote)) = sroot.recv().await.unwrap() else { panic!() };

        // The local channel feeds a pump into the connection; offer 1 GiB.
        const COUNT: u32 = 1024;
        let offered = Arc::new(AtomicUsize::new(0));
        let offered2 = offered.clone();
        let producer = tokio::spawn(async move {
            for seq in 0..COUNT {
                let data = ByteBuf::from(vec![seq as u8; MIB]);
                tx.send(Block { seq, data }).await.unwrap();
                offered2.fetch_add(1, Ordering::SeqCst);
            }
        });

        // Receiver stalled: sample while the producer runs into the limit.
        // The sender side may hold its send buffer plus one message in the
        // queue, one in the pump, one in the local channel; in flight and
        // kept for replay at most the port window; the receiver at most the
        // port window.
        let sender_bound = cfg.send_buffer as usize + cfg.port_window as usize + 3 * (MIB + 64);
        let mut stalled_samples = 0;
        let mut last = usize::MAX;
        while stalled_samples < 50 {
            // The sampling pace: staying stalled is what is observed, and no
            // event can say that nothing more happens.
            tokio::time::sleep(Duration::from_millis(5)).await;
            let (cs, ss) = (c.stats(), s.stats());
            let at_sender = cs.send_queued + cs.replay_bytes;
            assert!(at_sender <= sender_bound, "sender holds {at_sender} bytes > {sender_bound}");
            assert!(ss.recv_buffered <= cfg.port_window as usize, "receiver buffers {} bytes", ss.recv_buffered);
            let now = offered.load(Ordering::SeqCst);
            if now == last {
                stalled_samples += 1;
            }
            last = now;
        }
        assert!(last < 8, "the producer is held back (it got {last} MiB out)");

        // Resume: everything arrives exactly once, in order, intact.
        let mut memory_peak = 0;
        for seq in 0..COUNT {
            let block = remote.recv().await.unwrap().unwrap();
            assert_eq!(block.seq, seq);
            assert_eq!(block.data.len(), MIB);
            assert!(block.data.iter().all(|b| *b == seq as u8));
            let (cs, ss) = (c.stats(), s.stats());
            memory_peak = memory_peak.max(cs.send_queued + cs.replay_bytes + ss.recv_buffered);
        }
        producer.await.unwrap();
        assert!(memory_peak <= sender_bound + cfg.port_window as usize, "peak {memory_peak}");
    })
    .await;
}

/// A 16 MiB message sits in flight on one port (its receiver is not reading
/// yet) while small round trips on another port of the same connection go
/// on: chunks interleave and control frames are never stuck behind data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_transfer_does_not_block_small_round_trips() {
    within(Duration::from_secs(60), async {
        let (c, s) = pair_with(Kind::Tcp, Config::default(), Config::default()).await;
        let (croot, _) = c.root::<Setup, Setup>().unwrap();
        let (_, mut sroot) = s.root::<Setup, Setup>().unwrap();
        let (big_tx, big_rx) = mpsc::channel::<Block>(1);
        croot.send(Setup::Blocks(big_rx)).await.unwrap();
        let (ping_tx, ping_rx) = mpsc::channel::<u32>(1);
        let (pong_tx, mut pong_rx) = mpsc::channel::<u32>(1);
        croot.send(Setup::Pings(ping_rx, pong_tx)).await.unwrap();
        let Some(Setup::Blocks(mut big)) = sroot.recv().await.unwrap() else { panic!() };
        let Some(Setup::Pings(mut pings, pongs)) = sroot.recv().await.unwrap() else { panic!() };
        let echo = tokio::spawn(async move {
            while let Some(n) = pings.recv().await.unwrap() {
                pongs.send(n).await.unwrap();
            }
        });

        let data = ByteBuf::from(vec![7u8; 16 * MIB]);
        let sending = tokio::spawn(async move { big_tx.send(Block { seq: 0, data }).await.map_err(|_| ()) });
        common::eventually("the big message is queued", Duration::from_secs(10), || c.stats().send_queued > 8 * MIB)
            .await;
        for n in 0..200 {
            ping_tx.send(n).await.unwrap();
            assert_eq!(pong_rx.recv().await.unwrap(), Some(n));
        }
        let stats = c.stats();
        assert!(stats.send_queued > 8 * MIB, "the big message is still in flight ({} bytes queued)", stats.send_queued);
        let block = big.recv().await.unwrap().unwrap();
        assert_eq!(block.data.len(), 16 * MIB);
        sending.await.unwrap().unwrap();
        drop(ping_tx);
        echo.await.unwrap();
    })
    .await;
}
