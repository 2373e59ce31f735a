//! Two OS processes talk through tether.
//!
//! `cargo run --example ping_pong` starts a listener, re-executes itself as
//! the peer process, and the two exchange messages over one TCP connection:
//! the peer sends a channel *inside a message*, the first process answers on
//! it, and each question carries its own one-shot reply port.

use std::process::Stdio;

use serde::{Deserialize, Serialize};
use tether::{mpsc, oneshot, Config, Connection};
use tokio::net::{TcpListener, TcpStream};

/// What travels on the root channel.
#[derive(Serialize, Deserialize)]
enum Hello {
    /// "Send your pongs here": a sender end, live on arrival.
    Subscribe(mpsc::Sender<String>),
    /// A question with its own reply port.
    Ask { question: String, reply: oneshot::Sender<String> },
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    match std::env::args().nth(1).as_deref() {
        Some("--peer") => peer(std::env::args().nth(2).expect("address")).await,
        _ => first().await,
    }
}

/// The first process: listens, starts the peer, serves it.
async fn first() -> Result<(), Box<dyn std::error::Error>> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    println!("[listener pid {}] listening on {addr}, starting the peer process", std::process::id());
    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .args(["--peer", &addr.to_string()])
        .stdout(Stdio::inherit())
        .spawn()?;

    let (stream, _) = listener.accept().await?;
    let conn = Connection::accept(stream, Config::default()).await?;
    println!("[listener] connected to node {}", conn.peer_id());
    let (_tx, mut rx) = conn.root::<Hello, Hello>().expect("root channel");

    let mut pongs = None;
    while let Some(msg) = rx.recv().await? {
        match msg {
            Hello::Subscribe(tx) => {
                println!("[listener] got a channel from the peer; sending 3 pongs on it");
                for i in 1..=3 {
                    tx.send(format!("pong {i}")).await?;
                }
                pongs = Some(tx);
            }
            Hello::Ask { question, reply } => {
                println!("[listener] asked {question:?}; answering through its reply port");
                let _ = reply.send(format!("{} letters", question.len()));
            }
        }
    }
    drop(pongs);
    let status = child.wait().await?;
    println!("[listener] peer exited with {status}; done");
    std::process::exit(status.code().unwrap_or(1));
}

/// The peer process: connects, sends a channel inside a message, asks.
async fn peer(addr: String) -> Result<(), Box<dyn std::error::Error>> {
    let conn = Connection::connect(TcpStream::connect(&addr).await?, Config::default()).await?;
    println!("[peer pid {}] connected to node {}", std::process::id(), conn.peer_id());
    let (tx, _rx) = conn.root::<Hello, Hello>().expect("root channel");

    let (pong_tx, mut pong_rx) = mpsc::channel(8);
    tx.send(Hello::Subscribe(pong_tx)).await?;
    for _ in 0..3 {
        let pong = pong_rx.recv().await?.expect("pong");
        println!("[peer] received {pong:?} on the channel it sent over");
    }

    let (reply, answer) = oneshot::channel();
    tx.send(Hello::Ask { question: "how long is this?".into(), reply }).await?;
    println!("[peer] answer: {:?}", answer.await?);
    conn.close().await;
    Ok(())
}
