//! ractor's own counter example (ractor 0.16, `examples/counter.rs`), with
//! the counter on one tether node and the code that uses it on another,
//! over TCP.
//!
//! ```sh
//! cargo run --example ractor_counter
//! ```
//!
//! Only the lines a user must change differ from ractor's, each marked
//! `// tether:`: the serde derives and the reply port's attribute, the two
//! nodes, the export and the lookup. The actor and the loop that drives it
//! are ractor's, unchanged: `send_message` and `call_t!` take the
//! remote actor as they took the local one. Left out: ractor's logging setup
//! (it needs `tracing-glog`); the counts are printed instead.

use ractor::call_t;
use ractor::Actor;
use ractor::ActorProcessingErr;
use ractor::ActorRef;
use ractor::RpcReplyPort;
use serde::{Deserialize, Serialize}; // tether: messages cross the network
use tether::{Config, Node}; // tether

struct Counter;

#[derive(Clone)]
struct CounterState {
    count: i64,
}

#[derive(Serialize, Deserialize)] // tether
enum CounterMessage {
    Increment(i64),
    Decrement(i64),
    Retrieve(#[serde(with = "tether_ractor::rpc_reply")] RpcReplyPort<i64>), // tether
}

impl Actor for Counter {
    type Msg = CounterMessage;

    type State = CounterState;
    type Arguments = ();

    async fn pre_start(&self, _myself: ActorRef<Self::Msg>, _: ()) -> Result<Self::State, ActorProcessingErr> {
        tracing::info!("Starting the counter actor");
        // create the initial state
        Ok(CounterState { count: 0 })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        tracing::info!("Counting actor handle message...");
        match message {
            CounterMessage::Increment(how_much) => {
                state.count += how_much;
            }
            CounterMessage::Decrement(how_much) => {
                state.count -= how_much;
            }
            CounterMessage::Retrieve(reply_port) => {
                if !reply_port.is_closed() {
                    reply_port.send(state.count).unwrap();
                }
            }
        }
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // tether: node B owns the counter and exports it by name.
    let b = Node::new(Some("b"), Config::default())?;
    let addr = b.listen("127.0.0.1:0").await?;
    let (counter, handle) =
        Actor::spawn(Some("test_name".to_string()), Counter, ()).await.expect("Failed to start actor!");
    tether_ractor::export(&b, Some("counter"), counter.clone())?; // tether

    // tether: node A connects and finds it.
    let a = Node::new(Some("a"), Config::default())?;
    let b_id = a.connect(&addr.to_string()).await?;
    let actor = tether_ractor::lookup::<CounterMessage>(&a, b_id, "counter").await?; // tether

    // +5 +10 -5 a few times, printing the value via RPC
    for _i in 0..4 {
        actor.send_message(CounterMessage::Increment(5)).expect("Failed to send message");
        actor.send_message(CounterMessage::Increment(10)).expect("Failed to send message");
        actor.send_message(CounterMessage::Decrement(5)).expect("Failed to send message");

        let rpc_result = call_t!(actor, CounterMessage::Retrieve, 10);

        println!("Count is: {}", rpc_result.expect("RPC failed to reply successfully"));
        // tether: no log setup
    }

    counter.stop(None); // tether: the owner stops it (was `actor`)
    handle.await.expect("Actor failed to exit cleanly");
    Ok(())
}
