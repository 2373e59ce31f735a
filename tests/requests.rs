//! Requests that stay open, between two nodes over TCP and to a local
//! actor: a stream of replies that ends (or is cut off, or cancelled by
//! the asker), and a request with updates both ways before its response.

mod common;

use std::time::Duration;

use common::{within, TaskMailbox};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tether::{AskError, Config, Node, OpenRequest, RemoteRef, ReplyStream, RequestPort};
use tokio::sync::mpsc::unbounded_channel;

const T: Duration = Duration::from_secs(20);

#[derive(Serialize, Deserialize)]
enum Files {
    /// Replies 0..n, then ends the stream.
    List { n: u32, replies: ReplyStream<u32> },
    /// Replies 0..n, then drops the stream without ending it.
    Broken { n: u32, replies: ReplyStream<u32> },
    /// Replies 0..n, says so on `sent`, then ends the stream.
    Filled { n: u32, replies: ReplyStream<u32>, sent: tether::oneshot::Sender<()> },
    /// Replies until the asker gives up; then says so on `stopped`.
    Endless { replies: ReplyStream<u32>, stopped: tether::oneshot::Sender<u32> },
    /// Chunks come in; after each, the bytes so far go back; when the
    /// asker closes its side, the total is the response.
    Upload { port: RequestPort<Vec<u8>, u64, u64> },
}

/// An actor whose every request runs in a task of its own, as a real
/// actor's long handlers do.
fn files() -> TaskMailbox<Files> {
    let (tx, mut rx) = unbounded_channel();
    tokio::spawn(async move {
        while let Some(msg) = rx.recv().await {
            tokio::spawn(async move {
                match msg {
                    Files::List { n, replies } => {
                        for i in 0..n {
                            replies.send(i).await.unwrap();
                        }
                        replies.end().await;
                    }
                    Files::Filled { n, replies, sent } => {
                        for i in 0..n {
                            replies.send(i).await.unwrap();
                        }
                        sent.send(()).unwrap();
                        replies.end().await;
                    }
                    Files::Broken { n, replies } => {
                        for i in 0..n {
                            replies.send(i).await.unwrap();
                        }
                    }
                    Files::Endless { replies, stopped } => {
                        let mut i = 0;
                        loop {
                            tokio::select! {
                                sent = replies.send(i) => if sent.is_err() { break },
                                () = replies.cancelled() => break,
                            }
                            i += 1;
                        }
                        let _ = stopped.send(i);
                    }
                    Files::Upload { mut port } => {
                        let mut total = 0u64;
                        while let Some(chunk) = port.recv().await.unwrap() {
                            total += chunk.len() as u64;
                            port.send(total).await.unwrap();
                        }
                        port.respond(total).await.unwrap();
                    }
                }
            });
        }
    });
    TaskMailbox(tx)
}

/// A ref to the `files` actor on node B from node A, and one on B itself.
async fn refs(config: Config) -> (Node, Node, RemoteRef<Files>, RemoteRef<Files>) {
    let a = Node::new(Some("a"), config).unwrap();
    let b = Node::new(Some("b"), Config::default()).unwrap();
    let addr = b.listen("127.0.0.1:0").await.unwrap();
    let b_id = a.connect(&addr.to_string()).await.unwrap();
    let local = b.export(Some("files"), files()).unwrap();
    let remote = a.lookup(b_id, "files").await.unwrap();
    (a, b, remote, local)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_of_replies_arrives_in_order_and_ends() {
    within(T, async {
        let (_a, _b, remote, local) = refs(Config::default()).await;
        for (r, n) in [(&remote, 20_000), (&local, 1000)] {
            let mut replies = r.ask_stream(|replies| Files::List { n, replies }).await.unwrap();
            for i in 0..n {
                assert_eq!(replies.next().await.unwrap().unwrap(), i);
            }
            assert!(replies.next().await.is_none(), "ended after the last reply");
            assert!(replies.next().await.is_none(), "and stays ended");
        }
        // As a futures `Stream`.
        let replies = remote.ask_stream(|replies| Files::List { n: 5, replies }).await.unwrap();
        let all: Vec<u32> = replies.map(Result::unwrap).collect().await;
        assert_eq!(all, vec![0, 1, 2, 3, 4]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_its_handler_drops_unended_fails_the_asker() {
    within(T, async {
        let (_a, _b, remote, local) = refs(Config::default()).await;
        for r in [&remote, &local] {
            let mut replies = r.ask_stream(|replies| Files::Broken { n: 3, replies }).await.unwrap();
            for i in 0..3 {
                assert_eq!(replies.next().await.unwrap().unwrap(), i);
            }
            assert!(matches!(replies.next().await, Some(Err(AskError::NoReply))), "cut off, not complete");
            assert!(replies.next().await.is_none());
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_replies_stops_the_handler() {
    within(T, async {
        let (_a, _b, remote, _local) = refs(Config::default()).await;
        let (stopped, handler_done) = tether::oneshot::channel();
        let mut replies = remote.ask_stream(|replies| Files::Endless { replies, stopped }).await.unwrap();
        for i in 0..10 {
            assert_eq!(replies.next().await.unwrap().unwrap(), i);
        }
        drop(replies);
        let sent = handler_done.await.unwrap();
        assert!(sent >= 10, "the handler stopped after {sent} replies, once the asker was gone");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_request_carries_updates_both_ways_then_its_response() {
    within(T, async {
        let (_a, _b, remote, local) = refs(Config::default()).await;
        for r in [&remote, &local] {
            let mut upload: OpenRequest<Vec<u8>, u64, u64> =
                r.open_request(|port| Files::Upload { port }).await.unwrap();
            let mut sent = 0u64;
            for len in 1..=100usize {
                upload.send(vec![len as u8; len * 100]).await.unwrap();
                sent += len as u64 * 100;
                assert_eq!(upload.recv().await.unwrap(), Some(sent), "progress after each chunk, in order");
            }
            upload.close();
            assert_eq!(upload.recv().await.unwrap(), None, "the response came");
            assert_eq!(upload.response().await.unwrap(), sent);
        }
        // `response` alone skips the updates.
        let upload = remote.open_request(|port| Files::Upload { port }).await.unwrap();
        upload.send(vec![1; 10]).await.unwrap();
        upload.send(vec![2; 20]).await.unwrap();
        assert_eq!(upload.response().await.unwrap(), 30);
    })
    .await;
}

/// An open stream counts as a pending ask until it is dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_stream_counts_against_max_pending_asks() {
    within(T, async {
        let mut config = Config::default();
        config.max_pending_asks = 1;
        let (_a, _b, remote, _local) = refs(config).await;
        let (stopped, _done) = tether::oneshot::channel();
        let open = remote.ask_stream(|replies| Files::Endless { replies, stopped }).await.unwrap();
        let refused = remote.ask_stream(|replies| Files::List { n: 1, replies }).await;
        assert!(matches!(refused, Err(AskError::TooManyPending { limit: 1 })), "{refused:?}");
        drop(open);
        let mut replies = remote.ask_stream(|replies| Files::List { n: 1, replies }).await.unwrap();
        assert_eq!(replies.next().await.unwrap().unwrap(), 0);
    })
    .await;
}

/// A handler that fills the asker's window and then ends the stream: the
/// end waits for room like a reply, it is not dropped (a local channel
/// holds 16 replies; the asker reads only once all were sent).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_end_of_a_full_stream_is_not_lost() {
    within(T, async {
        let (_a, _b, remote, local) = refs(Config::default()).await;
        for r in [&local, &remote] {
            let (sent, all_sent) = tether::oneshot::channel();
            let mut replies = r.ask_stream(|replies| Files::Filled { n: 16, replies, sent }).await.unwrap();
            all_sent.await.unwrap();
            for i in 0..16 {
                assert_eq!(replies.next().await.unwrap().unwrap(), i);
            }
            assert!(replies.next().await.is_none(), "ended, not cut off");
        }
    })
    .await;
}

/// An ended stream and an answered request stop counting as pending asks,
/// even while their handles are kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_stream_stops_counting_against_max_pending_asks() {
    within(T, async {
        let mut config = Config::default();
        config.max_pending_asks = 1;
        let (_a, _b, remote, _local) = refs(config).await;
        let mut done = remote.ask_stream(|replies| Files::List { n: 1, replies }).await.unwrap();
        assert_eq!(done.next().await.unwrap().unwrap(), 0);
        assert!(done.next().await.is_none());
        let mut upload: OpenRequest<Vec<u8>, u64, u64> =
            remote.open_request(|port| Files::Upload { port }).await.expect("the ended stream holds no place");
        upload.close();
        assert_eq!(upload.recv().await.unwrap(), None);
        let mut again =
            remote.ask_stream(|replies| Files::List { n: 1, replies }).await.expect("nor the answered request");
        assert_eq!(again.next().await.unwrap().unwrap(), 0);
        drop((done, upload));
    })
    .await;
}

/// The response as the asker's type expects it, and as a handler with a
/// different idea of it sends it.
#[derive(Serialize, Deserialize)]
struct AskerSide(RequestPort<u32, u32, bool>);
#[derive(Serialize, Deserialize)]
struct HandlerSide(RequestPort<u32, u32, String>);

/// A response that does not decode is reported as such by `response`, not
/// as a request left unanswered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_that_does_not_decode_is_reported_as_such() {
    within(T, async {
        let (c, s) = common::pair(common::Kind::Tcp).await;
        let (out, _) = c.root::<AskerSide, ()>().unwrap();
        let (_, mut incoming) = s.root::<(), HandlerSide>().unwrap();
        let (port, open) = RequestPort::<u32, u32, bool>::channel();
        out.send(AskerSide(port)).await.unwrap();
        let HandlerSide(port) = incoming.recv().await.unwrap().unwrap();
        port.send(7).await.unwrap();
        port.respond("not a bool".to_string()).await.unwrap();
        let got = open.response().await;
        assert!(matches!(got, Err(AskError::Reply(tether::RecvError::Decode(_)))), "{got:?}");
    })
    .await;
}
