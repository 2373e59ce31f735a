//! Byte streams (`tether::pipe`) over real connections: far more than
//! `max_message` through a travelled writer, a reader handed on through a
//! middle node in mid-stream, the end of a stream said and not guessed, and
//! a writer held back by the reader's credit.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{eventually, pair, pair_with, within, Kind};
use serde::{Deserialize, Serialize};
use tether::{mpsc, pipe, Config, Connection};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

const T: Duration = Duration::from_secs(60);

#[derive(Serialize, Deserialize)]
enum Msg {
    Writer(pipe::Writer),
    Reader(pipe::Reader),
}

type Root = (mpsc::Sender<Msg>, mpsc::Receiver<Msg>);

fn root(c: &Connection) -> Root {
    c.root().unwrap()
}

async fn next(r: &mut Root) -> Msg {
    r.1.recv().await.unwrap().unwrap()
}

/// Deterministic bytes that no chunking can line up by accident.
fn byte(i: u64) -> u8 {
    (i.wrapping_mul(2_654_435_761) >> 13) as u8
}

fn data(from: u64, len: usize) -> Vec<u8> {
    (from..from + len as u64).map(byte).collect()
}

/// A writer sent to the peer streams 48 MiB, 48 times the connection's
/// `max_message`, in writes of awkward sizes; the reader gets every byte,
/// then the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_travelled_writer_streams_far_more_than_max_message() {
    within(T, async {
        let mut cfg = Config::default();
        cfg.max_message = 1024 * 1024;
        let (c, s) = pair_with(Kind::Tcp, cfg.clone(), cfg).await;
        let (mut cr, mut sr) = (root(&c), root(&s));
        let (writer, mut reader) = pipe::channel();
        cr.0.send(Msg::Writer(writer)).await.unwrap();
        let Msg::Writer(mut far) = next(&mut sr).await else { panic!() };

        const TOTAL: u64 = 48 << 20;
        let writing = tokio::spawn(async move {
            let mut at = 0u64;
            let mut step = 1usize;
            while at < TOTAL {
                let len = (step * 7919 % 200_000 + 1).min((TOTAL - at) as usize);
                far.write_all(&data(at, len)).await.unwrap();
                at += len as u64;
                step += 1;
            }
            far.shutdown().await.unwrap();
        });
        let mut at = 0u64;
        let mut buf = vec![0u8; 100_003];
        loop {
            let n = reader.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            assert!(buf[..n].iter().zip(at..).all(|(b, i)| *b == byte(i)), "bytes at {at}..{} intact", at + n as u64);
            at += n as u64;
        }
        assert_eq!(at, TOTAL, "every byte, then the end");
        writing.await.unwrap();
        let _ = &mut cr;
    })
    .await;
}

/// C writes; B reads part of the stream, then sends the reader on to A with
/// what it received and did not consume; A reads the rest, as whole
/// `Bytes`, sent and received without a copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_handed_on_in_mid_stream_loses_nothing() {
    within(T, async {
        let (bc_b, bc_c) = pair(Kind::Tcp).await;
        let (ab_a, ab_b) = pair(Kind::Unix).await;
        let (mut c, mut b_from_c, b_to_a, mut a) = (root(&bc_c), root(&bc_b), root(&ab_b), root(&ab_a));

        let (mut writer, reader) = pipe::channel();
        c.0.send(Msg::Reader(reader)).await.unwrap();
        let Msg::Reader(mut at_b) = next(&mut b_from_c).await else { panic!() };

        const TOTAL: u64 = 3 << 20;
        writer.write_all(&data(0, 1000)).await.unwrap();
        writer.flush().await.unwrap();
        // B reads ten bytes of the first piece, leaving the rest buffered.
        let mut first = [0u8; 10];
        at_b.read_exact(&mut first).await.unwrap();
        assert_eq!(first.to_vec(), data(0, 10));
        assert_eq!(at_b.fill_buf().await.unwrap().len(), 990, "the rest of the first piece is buffered at B");
        b_to_a.0.send(Msg::Reader(at_b)).await.unwrap();
        let Msg::Reader(at_a) = next(&mut a).await else { panic!() };

        // The rest as whole `Bytes`, sent without a copy.
        let mut at = 1000u64;
        while at < TOTAL {
            let len = 256 * 1024;
            writer.write_bytes(Bytes::from(data(at, len))).await.unwrap();
            at += len as u64;
        }
        writer.shutdown().await.unwrap();

        let mut at = 10u64;
        let mut at_a = at_a;
        while let Some(piece) = at_a.read_bytes().await.unwrap() {
            assert_eq!(piece.to_vec(), data(at, piece.len()), "bytes at {at} intact");
            at += piece.len() as u64;
        }
        assert_eq!(at, 1000 + (TOTAL - 1000).div_ceil(256 * 1024) * 256 * 1024, "A reads all but B's ten bytes");
        let _ = &mut c;
    })
    .await;
}

/// A writer that wrote here and then travels: what it wrote here comes
/// first, then what it writes there, then the end (the far end's writes
/// must not overtake the pieces still queued here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_that_travels_mid_stream_keeps_the_order() {
    within(T, async {
        let (c, s) = pair(Kind::Tcp).await;
        let (cr, mut sr) = (root(&c), root(&s));
        let (mut writer, mut reader) = pipe::channel();
        for i in 0..4u64 {
            writer.write_bytes(Bytes::from(data(i * 10, 10))).await.unwrap();
        }
        cr.0.send(Msg::Writer(writer)).await.unwrap();
        let Msg::Writer(mut far) = next(&mut sr).await else { panic!() };
        far.write_all(&data(40, 5000)).await.unwrap();
        far.shutdown().await.unwrap();
        // Everything from far has arrived before the reader starts, so the
        // far pieces are there to overtake the local ones.
        eventually("the far pieces arrived", T, || c.stats().recv_buffered >= 5000).await;
        let mut got = Vec::new();
        reader.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, data(0, 5040), "the local pieces, then the far ones, then the end");
    })
    .await;
}

/// The end of a stream is said: a writer dropped without shutting down, or
/// a connection that ends, is an error at the reader, never a clean end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_stream_never_looks_complete() {
    within(T, async {
        let (c, s) = pair(Kind::Tcp).await;
        let (mut cr, mut sr) = (root(&c), root(&s));

        let (writer, mut reader) = pipe::channel();
        cr.0.send(Msg::Writer(writer)).await.unwrap();
        let Msg::Writer(mut far) = next(&mut sr).await else { panic!() };
        far.write_all(b"half a file").await.unwrap();
        far.flush().await.unwrap();
        drop(far);
        let mut got = Vec::new();
        let err = reader.read_to_end(&mut got).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof, "{err}");
        assert_eq!(got, b"half a file");

        let (writer, mut reader) = pipe::channel();
        cr.0.send(Msg::Writer(writer)).await.unwrap();
        let Msg::Writer(mut far) = next(&mut sr).await else { panic!() };
        far.write_all(b"more").await.unwrap();
        far.flush().await.unwrap();
        // Even a graceful close of the connection ends the stream early.
        s.close().await;
        let mut got = Vec::new();
        let err = reader.read_to_end(&mut got).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof, "{err}");
        assert_eq!(got, b"more");
        let _ = (&mut cr, &mut sr);
    })
    .await;
}

/// What a hostile or broken peer puts on a pipe's port: `Piece`'s two
/// variants, and one the reader cannot decode.
#[derive(Serialize, Deserialize)]
enum FakePiece {
    Bytes(tether::Blob),
    End,
    Garbage(String),
}

/// `Msg` as that peer decodes it: its writer is a plain channel of fakes.
#[derive(Serialize, Deserialize)]
enum Evil {
    Writer(mpsc::Sender<FakePiece>),
}

/// A piece that does not decode breaks the stream for good: the reader
/// never returns the bytes after the hole as if they followed on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_piece_that_does_not_decode_breaks_the_stream() {
    within(T, async {
        let (c, s) = pair(Kind::Tcp).await;
        let (out, _) = c.root::<Msg, ()>().unwrap();
        let (_, mut incoming) = s.root::<(), Evil>().unwrap();
        let (writer, mut reader) = pipe::channel();
        out.send(Msg::Writer(writer)).await.unwrap();
        let Some(Evil::Writer(evil)) = incoming.recv().await.unwrap() else { panic!() };
        for piece in [
            FakePiece::Bytes(tether::Blob::from_static(b"ok")),
            FakePiece::Garbage("not a piece".into()),
            FakePiece::Bytes(tether::Blob::from_static(b"more")),
            FakePiece::End,
        ] {
            evil.send(piece).await.unwrap();
        }
        let mut got = [0u8; 2];
        reader.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ok");
        let err = reader.read(&mut [0u8; 16]).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData, "{err}");
        let again = reader.read(&mut [0u8; 16]).await;
        assert!(again.is_err(), "after a hole the stream stays broken, got {again:?}");
        // Nor does the hole vanish by sending the reader on.
        let sent = out.send(Msg::Reader(reader)).await;
        assert!(matches!(sent, Err(mpsc::SendError::Encode { .. })), "a broken reader does not travel");
    })
    .await;
}

/// A reader that stops reading holds its writer back: the writer gets no
/// further than the reader's credit, its own send buffer and two pieces.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_reader_holds_the_writer_back() {
    within(T, async {
        let mut cfg = Config::default();
        cfg.port_window = 256 * 1024;
        cfg.send_buffer = 256 * 1024;
        let (c, s) = pair_with(Kind::Tcp, cfg.clone(), cfg.clone()).await;
        let (mut cr, mut sr) = (root(&c), root(&s));
        let (writer, mut reader) = pipe::channel();
        cr.0.send(Msg::Writer(writer)).await.unwrap();
        let Msg::Writer(mut far) = next(&mut sr).await else { panic!() };

        const TOTAL: u64 = 64 << 20;
        let written = Arc::new(AtomicU64::new(0));
        let counter = written.clone();
        let writing = tokio::spawn(async move {
            let block = vec![7u8; 8192];
            for _ in 0..TOTAL / 8192 {
                far.write_all(&block).await.unwrap();
                counter.fetch_add(8192, Ordering::SeqCst);
            }
            far.shutdown().await.unwrap();
        });
        // The writer gets at least the reader's window out...
        let window = cfg.port_window as u64;
        eventually("the writer filled the window", T, || written.load(Ordering::SeqCst) >= window).await;
        // ...then stays put: sampled, as no event says that nothing more
        // happens.
        let (mut last, mut still) = (u64::MAX, 0);
        while still < 40 {
            tokio::time::sleep(Duration::from_millis(5)).await;
            let now = written.load(Ordering::SeqCst);
            still = if now == last { still + 1 } else { 0 };
            last = now;
        }
        let bound = (cfg.port_window + cfg.send_buffer) as u64 + 2 * pipe::PIECE as u64 + 8192;
        assert!(last <= bound, "the writer got {last} bytes out past a stalled reader (bound {bound})");

        let mut total = 0u64;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = reader.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            total += n as u64;
        }
        assert_eq!(total, TOTAL);
        writing.await.unwrap();
        let _ = (&mut cr, &mut sr);
    })
    .await;
}
