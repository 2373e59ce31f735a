//! Blobs: bytes a message carries without copying them, over real
//! transports, through a middle node, against hostile offsets, and counted
//! by a measuring allocator.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::Duration;

use common::{eventually, pair, pair_with, within, Kind, ALL};
use futures::FutureExt;
use serde::{Deserialize, Serialize};
use tether::{mpsc, Blob, Config};

const T: Duration = Duration::from_secs(20);

// ----- an allocator that measures this thread's large allocations ----------

struct Counting;

thread_local! {
    static TRACKING: Cell<bool> = const { Cell::new(false) };
    static LARGE: Cell<usize> = const { Cell::new(0) };
}

/// Allocations at least this large are counted.
const LARGE_MIN: usize = 64 * 1024;

fn note(size: usize) {
    let _ = TRACKING.try_with(|t| {
        if t.get() && size >= LARGE_MIN {
            LARGE.with(|l| l.set(l.get() + size));
        }
    });
}

// SAFETY: every call is passed unchanged to the system allocator, which
// upholds `GlobalAlloc`'s contract; `note` only touches this thread's cells
// (`try_with`, so not during thread teardown) and never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Bytes `f` allocated on this thread in allocations of `LARGE_MIN` or more.
fn large_allocations<R>(f: impl FnOnce() -> R) -> (R, usize) {
    LARGE.with(|l| l.set(0));
    TRACKING.with(|t| t.set(true));
    let r = f();
    TRACKING.with(|t| t.set(false));
    (r, LARGE.with(Cell::get))
}

// ----- messages ----------------------------------------------------------

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Frame {
    seq: u64,
    name: String,
    big: Blob,
    small: Blob,
    empty: Blob,
    more: Vec<Blob>,
}

fn pattern(len: usize, seed: u8) -> Blob {
    Blob::from((0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect::<Vec<u8>>())
}

fn frame(seq: u64) -> Frame {
    Frame {
        seq,
        name: format!("frame {seq}"),
        big: pattern(300_000 + seq as usize, seq as u8),
        small: pattern(100, 7),
        empty: Blob::new(),
        more: vec![pattern(10, 1), pattern(70_000, 2), pattern(1, 3), pattern(5_000, 4)],
    }
}

/// Sends frames `0..n` on `tx` from a task of their own while `rx` checks
/// each arrives whole and in order; `tx` is dropped at the end.
async fn stream_frames(tx: mpsc::Sender<Frame>, rx: &mut mpsc::Receiver<Frame>, n: u64, path: &str) {
    let sender = tokio::spawn(async move {
        for seq in 0..n {
            tx.send(frame(seq)).await.unwrap();
        }
    });
    for seq in 0..n {
        assert_eq!(rx.recv().await.unwrap().unwrap(), frame(seq), "{path}");
    }
    sender.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blobs_arrive_intact_on_every_transport() {
    for kind in ALL {
        within(T, async {
            let (c, s) = pair(kind).await;
            let (tx, _) = c.root::<Frame, ()>().unwrap();
            let (_, mut rx) = s.root::<(), Frame>().unwrap();
            stream_frames(tx, &mut rx, 20, &format!("{kind:?}")).await;
        })
        .await;
    }
}

/// The point of a blob: the sender encodes it without copying it, and the
/// receiver decodes it without copying it out of the message's buffer. A
/// `Vec<u8>` of the same size beside it is copied both times, which shows
/// the measurement sees the copies it is there to see.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_blob_is_copied_neither_into_nor_out_of_its_message() {
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum Payload {
        Blob(u64, Blob),
        Vec(u64, Vec<u8>),
    }
    within(T, async {
        const LEN: usize = 1 << 20;
        let (c, s) = pair(Kind::Tcp).await;
        let (tx, _) = c.root::<Payload, ()>().unwrap();
        let (_, mut rx) = s.root::<(), Payload>().unwrap();
        let mut messages = 0;
        // Sends `msg`, waits for all of it to arrive, receives it: the bytes
        // the sending thread and the receiving thread allocated in large
        // allocations.
        let mut cross = async |msg: Payload| {
            let want = format!("{msg:?}");
            let (sent, sent_large) = large_allocations(|| tx.try_send(msg));
            sent.unwrap();
            messages += 1;
            eventually("the message arrived", T, || s.stats().messages_in >= messages).await;
            let (got, got_large) = large_allocations(|| rx.recv().now_or_never());
            assert_eq!(format!("{:?}", got.expect("the whole message is in").unwrap().unwrap()), want);
            (sent_large, got_large)
        };
        // A vector is copied both ways: this is what the measurement sees.
        // (Only the first encoding of its size must allocate: later ones
        // may find a buffer of an earlier one in the process's pool.)
        let (sent, got) = cross(Payload::Vec(0, pattern(LEN, 0).to_vec())).await;
        assert!(sent >= LEN, "a vector is copied into its message: {sent}");
        assert!(got >= LEN, "and out of it: {got}");
        // A blob is not. (The first message of its size teaches the
        // receiver how large a buffer to reassemble the next one in:
        // measure the second.)
        for seq in 0..2 {
            let (sent, got) = cross(Payload::Blob(seq, pattern(LEN, seq as u8))).await;
            if seq == 1 {
                assert!(sent < LEN / 4, "encoding a blob copied it: {sent} bytes allocated");
                assert!(got < LEN / 4, "decoding a blob copied it: {got} bytes allocated");
            }
        }
    })
    .await;
}

/// A blob forwarded through a middle node (the receiving end travelled on)
/// arrives whole, large and small, with the ends around it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blobs_cross_a_middle_node() {
    within(T, async {
        let (ab_a, ab_b) = pair(Kind::Tcp).await;
        let (bc_b, bc_c) = pair(Kind::Unix).await;
        let (_, mut a_in) = ab_a.root::<(), mpsc::Receiver<Frame>>().unwrap();
        let (b_out, _) = ab_b.root::<mpsc::Receiver<Frame>, ()>().unwrap();
        let (_, mut b_in) = bc_b.root::<(), mpsc::Receiver<Frame>>().unwrap();
        let (c_out, _) = bc_c.root::<mpsc::Receiver<Frame>, ()>().unwrap();

        let (tx, rx) = mpsc::channel::<Frame>(4);
        c_out.send(rx).await.unwrap();
        b_out.send(b_in.recv().await.unwrap().unwrap()).await.unwrap();
        let mut rx = a_in.recv().await.unwrap().unwrap();
        stream_frames(tx, &mut rx, 10, "through the middle node").await;
        assert_eq!(rx.recv().await.unwrap(), None);
    })
    .await;
}

/// What a blob says about where it lies is checked: one outside the
/// message's blobs fails that message's decode (typed, counted) and the
/// channel goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_said_to_lie_outside_its_message_fails_that_message_only() {
    /// What the peer sends: in `Forged`, what a blob encodes to, pointing
    /// nowhere.
    #[derive(Serialize)]
    enum Sent {
        Forged(u64, (u64, u64)),
        Real(u64, Blob),
    }
    #[derive(Debug, PartialEq, Deserialize)]
    enum Received {
        Forged(u64, Blob),
        Real(u64, Blob),
    }
    within(T, async {
        let (c, s) = pair(Kind::Tcp).await;
        let (tx, _) = c.root::<Sent, ()>().unwrap();
        let (_, mut rx) = s.root::<(), Received>().unwrap();
        for (offset, len) in [(0, 1), (u64::MAX, 2), (1, u64::MAX)] {
            tx.send(Sent::Forged(1, (offset, len))).await.unwrap();
            let err = rx.recv().await.unwrap_err();
            let tether::RecvError::Decode(e) = err else { panic!("{err:?}") };
            assert!(e.to_string().contains("lies outside the message's 0 bytes of blobs"), "{e}");
        }
        assert_eq!(s.stats().undecodable, 3);
        tx.send(Sent::Real(2, pattern(100_000, 9))).await.unwrap();
        assert_eq!(rx.recv().await.unwrap().unwrap(), Received::Real(2, pattern(100_000, 9)), "the channel goes on");
    })
    .await;
}

/// A message's blobs count toward the peer's `max_message`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blobs_count_toward_the_message_limit() {
    within(T, async {
        let mut small = Config::default();
        small.max_message = 64 * 1024;
        let (c, s) = pair_with(Kind::Tcp, Config::default(), small).await;
        let (tx, _) = c.root::<Blob, ()>().unwrap();
        let (_, mut rx) = s.root::<(), Blob>().unwrap();
        let err = tx.send(pattern(64 * 1024, 0)).await.unwrap_err();
        assert!(matches!(err, mpsc::SendError::TooLarge { max: 65536, .. }), "{err:?}");
        tx.send(pattern(60 * 1024, 0)).await.unwrap();
        assert_eq!(rx.recv().await.unwrap().unwrap(), pattern(60 * 1024, 0));
    })
    .await;
}

/// With MessagePack, too.
#[cfg(feature = "msgpack")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blobs_travel_with_messagepack() {
    within(T, async {
        let mut mp = Config::default();
        mp.codec = tether::codec::CodecKind::MessagePack;
        let (c, s) = pair_with(Kind::Tcp, mp.clone(), mp).await;
        let (tx, _) = c.root::<Frame, ()>().unwrap();
        let (_, mut rx) = s.root::<(), Frame>().unwrap();
        for seq in 0..3 {
            tx.send(frame(seq)).await.unwrap();
            assert_eq!(rx.recv().await.unwrap().unwrap(), frame(seq));
        }
    })
    .await;
}

/// Outside a tether message a blob is a plain byte string.
#[test]
fn outside_a_message_a_blob_is_a_byte_string() {
    let blob = pattern(1000, 5);
    let encoded = postcard::to_allocvec(&blob).unwrap();
    assert_eq!(encoded, postcard::to_allocvec(&serde_bytes::ByteBuf::from(blob.to_vec())).unwrap());
    assert_eq!(postcard::from_bytes::<Blob>(&encoded).unwrap(), blob);
    assert_eq!(format!("{blob:?}"), "Blob(1000 bytes)");
}
