//! Compression over real sockets: negotiated in the handshake, applied per
//! message above the threshold when it pays, through a middle node, and
//! against a hostile peer's packed messages.

mod common;

use std::time::Duration;

use common::{pair_with, within, Kind, Recorder};
use serde::{Deserialize, Serialize};
use tether::{mpsc, Algorithm, Blob, Compression, Config, Connection, ConnectionError, ProtocolError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const T: Duration = Duration::from_secs(20);

fn with(compression: Compression) -> Config {
    let mut cfg = Config::default();
    cfg.compression = compression;
    cfg
}

/// JSON text as an application would send it: an array of records.
fn json(records: usize) -> String {
    #[derive(Serialize)]
    struct Record {
        id: usize,
        user: String,
        email: String,
        active: bool,
        score: f64,
        tags: Vec<&'static str>,
    }
    let tags = ["admin", "beta", "eu-west", "mobile", "trial", "verified"];
    let records: Vec<Record> = (0..records)
        .map(|id| Record {
            id,
            user: format!("user-{:05}", id * 7919 % 100_000),
            email: format!("user{}@example.com", id * 31 % 1000),
            active: id % 3 != 0,
            score: (id * 37 % 1000) as f64 / 10.0,
            tags: tags.iter().copied().skip(id % 4).take(1 + id % 3).collect(),
        })
        .collect();
    serde_json::to_string(&records).unwrap()
}

/// Bytes no compressor shrinks (xorshift).
fn noise(len: usize) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Sends `msg` on `tx`, receives it on `rx`, and returns the bytes the
/// send put on the wire (`bytes_out` of `from`, which counts messages as
/// sent: packed, head included).
async fn round<T>(from: &Connection, tx: &mpsc::Sender<T>, rx: &mut mpsc::Receiver<T>, msg: T) -> u64
where
    T: Serialize + for<'de> Deserialize<'de> + PartialEq + std::fmt::Debug + Clone + Send + 'static,
{
    let before = from.stats().bytes_out;
    tx.send(msg.clone()).await.unwrap();
    assert_eq!(rx.recv().await.unwrap().unwrap(), msg);
    from.stats().bytes_out - before
}

/// With both sides on, large JSON arrives intact and crosses as a fraction
/// of its size, each way, with each algorithm and over each stream kind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_json_crosses_compressed_and_arrives_intact() {
    let text = json(2000);
    assert!(text.len() > 100_000, "{} bytes", text.len());
    for (algorithm, kind) in [(Algorithm::Lz4, Kind::Tcp), (Algorithm::Zstd, Kind::Tcp), (Algorithm::Lz4, Kind::Unix)] {
        within(T, async {
            let cfg = with(Compression::new([algorithm]));
            let (c, s) = pair_with(kind, cfg.clone(), cfg).await;
            let (ctx, mut crx) = c.root::<String, String>().unwrap();
            let (stx, mut srx) = s.root::<String, String>().unwrap();
            for _ in 0..3 {
                let wire = round(&c, &ctx, &mut srx, text.clone()).await;
                assert!(wire * 3 < text.len() as u64, "{algorithm}: {wire} bytes for {}", text.len());
                let back = round(&s, &stx, &mut crx, text.clone()).await;
                assert!(back * 3 < text.len() as u64, "{algorithm} back: {back} bytes for {}", text.len());
            }
            assert_eq!(c.stats().bytes_out, s.stats().bytes_in, "counted alike on both sides");
            assert_eq!((c.stats().undecodable, s.stats().undecodable), (0, 0));
        })
        .await;
    }
}

/// Below the threshold a message goes as it is; at it, it is packed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_below_the_threshold_go_plain() {
    within(T, async {
        let cfg = with(Compression::lz4());
        assert_eq!(cfg.compression.threshold, 1024, "the documented default");
        let (c, s) = pair_with(Kind::Tcp, cfg.clone(), cfg).await;
        let (tx, _) = c.root::<String, ()>().unwrap();
        let (_, mut rx) = s.root::<(), String>().unwrap();
        // postcard: a 2-byte length, then the text.
        let below = "a".repeat(1021);
        assert!(round(&c, &tx, &mut rx, below.clone()).await > below.len() as u64, "below: plain");
        let at = "a".repeat(1022);
        assert!(round(&c, &tx, &mut rx, at).await < 100, "at the threshold: packed");
        let mut high = with(Compression::lz4());
        high.compression.threshold = 64 * 1024;
        let (c, s) = pair_with(Kind::Tcp, high.clone(), high).await;
        let (tx, _) = c.root::<String, ()>().unwrap();
        let (_, mut rx) = s.root::<(), String>().unwrap();
        let text = json(300);
        assert!(text.len() < 64 * 1024);
        assert!(round(&c, &tx, &mut rx, text.clone()).await > text.len() as u64, "below a raised threshold");
    })
    .await;
}

/// Data that does not shrink is sent plain, not packed larger.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incompressible_data_goes_plain() {
    within(T, async {
        for algorithm in [Algorithm::Lz4, Algorithm::Zstd] {
            let cfg = with(Compression::new([algorithm]));
            let (c, s) = pair_with(Kind::Tcp, cfg.clone(), cfg).await;
            let (tx, _) = c.root::<Vec<u8>, ()>().unwrap();
            let (_, mut rx) = s.root::<(), Vec<u8>>().unwrap();
            let data = noise(200_000);
            let wire = round(&c, &tx, &mut rx, data.clone()).await;
            // The value (length prefix and bytes) and a head with its sizes.
            assert_eq!(wire, data.len() as u64 + 3 + 10, "{algorithm}: sent as it is");
        }
    })
    .await;
}

/// Compression on one side only: nothing is compressed either way (the
/// side that has it finds the peer accepts nothing; the other uses none),
/// and everything arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_one_side_off_nothing_is_compressed() {
    let text = json(1000);
    for (client, server) in [(Compression::lz4(), Compression::off()), (Compression::off(), Compression::zstd())] {
        within(T, async {
            let (c, s) = pair_with(Kind::Tcp, with(client), with(server)).await;
            let (ctx, mut crx) = c.root::<String, String>().unwrap();
            let (stx, mut srx) = s.root::<String, String>().unwrap();
            assert!(round(&c, &ctx, &mut srx, text.clone()).await > text.len() as u64);
            assert!(round(&s, &stx, &mut crx, text.clone()).await > text.len() as u64);
        })
        .await;
    }
}

/// The algorithm of every packed message that crossed in `stream` (one
/// direction of a connection, from its `Hello` on), read off the wire.
fn packed_algorithms(stream: &[u8]) -> Vec<u8> {
    // The Hello: 74 bytes and no authentication here.
    let mut rest = &stream[74..];
    let mut found = Vec::new();
    while rest.len() >= 10 {
        let (kind, flags) = (rest[0], rest[1]);
        let len = u32::from_be_bytes(rest[6..10].try_into().unwrap()) as usize;
        let Some(payload) = rest.get(10..10 + len) else { break };
        if kind == 1 && flags & 1 != 0 {
            let word = u16::from_be_bytes([payload[0], payload[1]]);
            if word & 0x2000 != 0 {
                let ports = (word & 0x1fff) as usize;
                let at =
                    2 + 5 * ports + if word & 0x8000 != 0 { 25 } else { 0 } + if word & 0x4000 != 0 { 8 } else { 0 };
                found.push(payload[at]);
            }
        }
        rest = &rest[10 + len..];
    }
    found
}

/// Each side sends with its own first choice among what the peer accepts,
/// as the bytes on the wire show (1: LZ4, 2: Zstd).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_side_sends_with_its_first_choice_the_peer_accepts() {
    use Algorithm::{Lz4, Zstd};
    let text = json(1000);
    let cases = [
        // (client's list, server's list, client sends with, server sends with)
        (vec![Zstd, Lz4], vec![Lz4], 1, 1),
        (vec![Lz4, Zstd], vec![Zstd, Lz4], 1, 2),
        (vec![Zstd], vec![Lz4, Zstd], 2, 2),
    ];
    for (client, server, up, down) in cases {
        within(T, async {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let wire = Recorder::start(l.local_addr().unwrap()).await;
            let (c, s) = tokio::join!(
                async {
                    let io = TcpStream::connect(wire.addr).await.unwrap();
                    Connection::connect(io, with(Compression::new(client.clone()))).await.unwrap()
                },
                async {
                    let io = l.accept().await.unwrap().0;
                    Connection::accept(io, with(Compression::new(server.clone()))).await.unwrap()
                },
            );
            let (ctx, mut crx) = c.root::<String, String>().unwrap();
            let (stx, mut srx) = s.root::<String, String>().unwrap();
            for _ in 0..2 {
                round(&c, &ctx, &mut srx, text.clone()).await;
                round(&s, &stx, &mut crx, text.clone()).await;
            }
            let (to_server, to_client) = wire.streams();
            assert_eq!(packed_algorithms(&to_server), [up, up], "{client:?} to {server:?}");
            assert_eq!(packed_algorithms(&to_client), [down, down], "{server:?} to {client:?}");
        })
        .await;
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct WithBlobs {
    text: String,
    small: Blob,
    large: Blob,
    after: Blob,
}

/// The encoded value and the small blobs copied right after it are packed
/// together (the value alone is short of the threshold here); a large blob
/// goes as it is, and every blob arrives where it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_blobs_are_packed_with_the_value_and_large_ones_go_as_they_are() {
    within(T, async {
        let cfg = with(Compression::zstd());
        let (c, s) = pair_with(Kind::Tcp, cfg.clone(), cfg).await;
        let (tx, _) = c.root::<WithBlobs, ()>().unwrap();
        let (_, mut rx) = s.root::<(), WithBlobs>().unwrap();
        let bytes = json(400).into_bytes();
        let msg = WithBlobs {
            text: "a short value".into(),
            small: Blob::from(bytes[..3000].to_vec()),
            large: Blob::from(bytes[..20_000].to_vec()),
            after: Blob::from(bytes[..100].to_vec()),
        };
        let wire = round(&c, &tx, &mut rx, msg.clone()).await;
        assert!(wire > 20_100, "the large blob and the small one after it go as they are: {wire}");
        assert!(wire < 20_100 + 3000, "the value and the 3,000-byte blob before the large one are packed: {wire}");
        // With compression off, for scale.
        let (c, s) = pair_with(Kind::Tcp, Config::default(), Config::default()).await;
        let (tx, _) = c.root::<WithBlobs, ()>().unwrap();
        let (_, mut rx) = s.root::<(), WithBlobs>().unwrap();
        assert!(round(&c, &tx, &mut rx, msg).await > 23_100);
    })
    .await;
}

/// Through a middle node, a packed message goes on packed where the next
/// peer takes it so, and is unpacked there where it does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packed_messages_cross_a_middle_node() {
    let text = json(1000);
    for (next_hop, packed_on) in [(Compression::zstd(), true), (Compression::lz4(), false), (Compression::off(), false)]
    {
        within(T, async {
            let zstd = with(Compression::zstd());
            // c sends to a through b: c - b packed with Zstd, b - a as `next_hop`.
            let (ab_a, ab_b) = pair_with(Kind::Tcp, with(next_hop.clone()), with(next_hop.clone())).await;
            let (bc_b, bc_c) = pair_with(Kind::Unix, zstd.clone(), zstd).await;
            let (_, mut a_in) = ab_a.root::<(), mpsc::Receiver<String>>().unwrap();
            let (b_out, _) = ab_b.root::<mpsc::Receiver<String>, ()>().unwrap();
            let (_, mut b_in) = bc_b.root::<(), mpsc::Receiver<String>>().unwrap();
            let (c_out, _) = bc_c.root::<mpsc::Receiver<String>, ()>().unwrap();
            let (tx, rx) = mpsc::channel::<String>(4);
            c_out.send(rx).await.unwrap();
            b_out.send(b_in.recv().await.unwrap().unwrap()).await.unwrap();
            let mut rx = a_in.recv().await.unwrap().unwrap();
            let (first_hop, second_hop) = (bc_c.stats().bytes_out, ab_b.stats().bytes_out);
            for _ in 0..5 {
                tx.send(text.clone()).await.unwrap();
                assert_eq!(rx.recv().await.unwrap().unwrap(), text, "{next_hop:?}");
            }
            let first_hop = bc_c.stats().bytes_out - first_hop;
            let second_hop = ab_b.stats().bytes_out - second_hop;
            assert!(first_hop * 3 < 5 * text.len() as u64, "packed from c: {first_hop}");
            if packed_on {
                assert_eq!(second_hop, first_hop, "passed on packed, as it came");
            } else {
                assert!(second_hop > 5 * text.len() as u64, "unpacked at b: {second_hop}");
            }
            assert_eq!(bc_b.stats().undecodable, 0);
        })
        .await;
    }
}

// ----- a hostile peer -------------------------------------------------------

/// A `Hello` (protocol version 8) accepting `accepts`, as raw bytes.
/// Both algorithms, in a `Hello`'s compression byte.
const ACCEPTS_ALL: u8 = 0x03;

fn raw_hello(accepts: u8) -> Vec<u8> {
    let mut h = Vec::new();
    h.extend_from_slice(b"TETHER");
    h.extend_from_slice(&8u16.to_be_bytes());
    h.extend_from_slice(&0u16.to_be_bytes());
    h.extend_from_slice(&[0x22; 16]); // node id
    h.push(1); // postcard
    h.push(accepts);
    h.extend_from_slice(&[0; 16]); // session
    h.extend_from_slice(&0u64.to_be_bytes());
    for v in [256 * 1024u32, 16 << 20, 1 << 20, 1 << 20, 64] {
        h.extend_from_slice(&v.to_be_bytes());
    }
    h.extend_from_slice(&0u16.to_be_bytes());
    h
}

/// A one-chunk message on root port 2 whose head says it is packed with
/// `algorithm` and unpacks to `plain` bytes; `packed` is all of its body.
fn packed_frame(algorithm: u8, plain: u32, packed: &[u8]) -> Vec<u8> {
    let mut payload = vec![0x20, 0]; // bit 13: a packing follows; no ports
    payload.push(algorithm);
    payload.extend_from_slice(&plain.to_be_bytes());
    payload.extend_from_slice(&(packed.len() as u32).to_be_bytes());
    payload.extend_from_slice(packed);
    let mut frame = vec![1, 0x03]; // Data, FIRST | LAST
    frame.extend_from_slice(&2u32.to_be_bytes());
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    frame.extend_from_slice(&payload);
    frame
}

/// Accepts a raw TCP peer that writes `bytes` (then keeps the socket open,
/// reading), as a tether end configured with `cfg`.
async fn accept_raw(bytes: Vec<u8>, cfg: Config) -> (Connection, tokio::task::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let peer = tokio::spawn(async move {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(&bytes).await.unwrap();
        let mut sink = vec![0; 64 * 1024];
        while s.read(&mut sink).await.is_ok_and(|n| n > 0) {}
    });
    (Connection::accept(l.accept().await.unwrap().0, cfg).await.unwrap(), peer)
}

fn postcard_string(s: &str) -> Vec<u8> {
    postcard::to_stdvec(s).unwrap()
}

/// A hostile peer's packed messages: corrupt data, lengths that lie and a
/// bomb each fail that message alone (a typed error, counted), and the
/// connection goes on; every one of them is built by hand. (What unpacking
/// allocates is the head's plain length, which the mux bounds by the max
/// message and by 256 times the packed part; see the protocol test below.) Another
/// connection meanwhile is untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_peers_bad_packed_messages_fail_one_by_one() {
    within(T, async {
        let cfg = with(Compression::new([Algorithm::Lz4, Algorithm::Zstd]));
        let (good_c, good_s) = pair_with(Kind::Tcp, cfg.clone(), cfg.clone()).await;
        let (gtx, _) = good_c.root::<String, ()>().unwrap();
        let (_, mut grx) = good_s.root::<(), String>().unwrap();

        let value = postcard_string(&json(50));
        let lz4 = lz4_flex::block::compress(&value);
        let zstd = zstd::bulk::compress(&value, 1).unwrap();
        let bomb = zstd::bulk::compress(&vec![0u8; 16 << 20], 1).unwrap();
        assert!(bomb.len() < 16 * 1024, "16 MiB of zeros pack small: {}", bomb.len());
        let mut garbage = zstd.clone();
        for b in garbage.iter_mut().skip(3).step_by(7) {
            *b ^= 0xa5;
        }
        let len = value.len() as u32;
        let bad = [
            ("LZ4 longer than said", packed_frame(1, len - 1, &lz4), "LZ4"),
            ("LZ4 shorter than said", packed_frame(1, len + 1, &lz4), "where the head said"),
            ("Zstd longer than said", packed_frame(2, len - 1, &zstd), "Zstd"),
            ("Zstd shorter than said", packed_frame(2, len + 1, &zstd), "where the head said"),
            ("Zstd garbage", packed_frame(2, len, &garbage), "Zstd"),
            ("LZ4 of random bytes", packed_frame(1, len, &noise(5000)), "LZ4"),
            ("a bomb said to be smaller than it is", packed_frame(2, bomb.len() as u32 * 200, &bomb), "Zstd"),
            (
                "a packed part beyond the message",
                {
                    let mut f = packed_frame(1, len, &lz4);
                    // The packed length (after the head's algorithm and plain length).
                    f[10 + 7..10 + 11].copy_from_slice(&(lz4.len() as u32 + 1).to_be_bytes());
                    f
                },
                "in a message of",
            ),
        ];
        let mut stream = raw_hello(0x03);
        for (_, frame, _) in &bad {
            stream.extend_from_slice(frame);
        }
        // Then the same message packed right, both ways: the connection
        // goes on.
        stream.extend_from_slice(&packed_frame(1, len, &lz4));
        stream.extend_from_slice(&packed_frame(2, len, &zstd));
        let (hostile, _peer) = accept_raw(stream, cfg).await;
        let (_, mut rx) = hostile.root::<(), String>().unwrap();
        for (what, _, says) in &bad {
            let err = rx.recv().await.unwrap_err();
            let tether::RecvError::Decode(e) = &err else { panic!("{what}: {err:?}") };
            assert!(matches!(e, tether::codec::CodecError::Decompress { .. }), "{what}: {e}");
            assert!(e.to_string().contains(says), "{what}: {e}");
        }
        assert_eq!(hostile.stats().undecodable, bad.len() as u64);
        assert_eq!(rx.recv().await.unwrap().unwrap(), json(50), "LZ4 done right");
        assert_eq!(rx.recv().await.unwrap().unwrap(), json(50), "Zstd done right");
        assert!(hostile.error().is_none(), "{:?}", hostile.error());

        gtx.send(json(500)).await.unwrap();
        assert_eq!(grx.recv().await.unwrap().unwrap(), json(500), "the other connection goes on");
    })
    .await;
}

/// Packed messages that break the protocol end their connection at once,
/// before anything is unpacked: one from a peer whose algorithm this side
/// never accepted (or with compression off here), one that says it
/// unpacks to more than this side's max message, and one that says it
/// unpacks to more than 256 times its packed bytes (a few bytes must not
/// make the receiver allocate and fill megabytes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packed_messages_that_break_the_protocol_end_their_connection() {
    let value = postcard_string(&json(50));
    let lz4 = lz4_flex::block::compress(&value);
    let len = value.len() as u32;
    let mut small = with(Compression::lz4());
    small.max_message = 64 * 1024;
    let cases = [
        (Config::default(), packed_frame(1, len, &lz4), ProtocolError::UnacceptedCompression { port: 2, algorithm: 1 }),
        (
            with(Compression::zstd()),
            packed_frame(1, len, &lz4),
            ProtocolError::UnacceptedCompression { port: 2, algorithm: 1 },
        ),
        (
            with(Compression::lz4()),
            packed_frame(5, len, &lz4),
            ProtocolError::UnacceptedCompression { port: 2, algorithm: 5 },
        ),
        (small, packed_frame(1, 64 * 1024 + 1, &lz4), ProtocolError::MessageTooLarge { port: 2, max: 64 * 1024 }),
        (
            with(Compression::lz4()),
            packed_frame(1, lz4.len() as u32 * 256 + 1, &lz4),
            ProtocolError::PackRatio { port: 2, plain: lz4.len() as u32 * 256 + 1, packed: lz4.len() as u32 },
        ),
    ];
    for (cfg, frame, want) in cases {
        within(T, async {
            let mut stream = raw_hello(0x03);
            stream.extend_from_slice(&frame);
            let (hostile, _peer) = accept_raw(stream, cfg).await;
            let (_, mut rx) = hostile.root::<(), String>().unwrap();
            let got = rx.recv().await;
            assert!(
                matches!(&got, Err(tether::RecvError::Connection(ConnectionError::Protocol(e))) if *e == want),
                "{got:?}, wanted {want:?}"
            );
            let end = hostile.closed().await;
            assert!(matches!(&end, ConnectionError::Protocol(e) if *e == want), "{end:?}");
        })
        .await;
    }
}

/// A frame on `port` holding one whole message: `head` (the port table and
/// what follows it), then `body`.
fn data_frame(port: u32, head: &[u8], body: &[u8]) -> Vec<u8> {
    let mut frame = vec![1, 0x03]; // Data, FIRST | LAST
    frame.extend_from_slice(&port.to_be_bytes());
    frame.extend_from_slice(&((head.len() + body.len()) as u32).to_be_bytes());
    frame.extend_from_slice(head);
    frame.extend_from_slice(body);
    frame
}

/// A hostile peer writes, on a port a middle node splices on to a node that
/// takes no compression, a packed message that does not unpack and then a
/// good one. The middle node ends the splice there (counting the bad
/// message): the far receiver sees its stream end, never a stream that
/// silently skipped a message and went on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_that_cannot_unpack_ends_the_stream() {
    within(T, async {
        let mut stream = raw_hello(ACCEPTS_ALL);
        // On root port 2: a receiver end of port 4 (the hostile writes it).
        stream.extend_from_slice(&data_frame(2, &[0x00, 0x01, 0, 0, 0, 4, 1], &[0x00]));
        let garbage = vec![0x5a; 300];
        let mut packed_head = vec![0x20, 0x00, 1];
        packed_head.extend_from_slice(&1000u32.to_be_bytes());
        packed_head.extend_from_slice(&(garbage.len() as u32).to_be_bytes());
        stream.extend_from_slice(&data_frame(4, &packed_head, &garbage));
        stream.extend_from_slice(&data_frame(4, &[0x00, 0x00], &postcard_string("after the hole")));
        let (middle, _hostile) = accept_raw(stream, with(Compression::lz4())).await;
        let (_, mut from_hostile) = middle.root::<(), mpsc::Receiver<String>>().unwrap();
        let relayed = from_hostile.recv().await.unwrap().unwrap();

        let (to_far, far) = pair_with(Kind::Tcp, Config::default(), Config::default()).await;
        let (onward, _) = to_far.root::<mpsc::Receiver<String>, ()>().unwrap();
        let (_, mut at_far) = far.root::<(), mpsc::Receiver<String>>().unwrap();
        onward.send(relayed).await.unwrap();
        let mut rx = at_far.recv().await.unwrap().unwrap();
        assert_eq!(rx.recv().await.unwrap(), None, "the stream ends at the hole");
        assert_eq!(middle.stats().undecodable, 1, "the bad message is counted where it failed");
    })
    .await;
}
