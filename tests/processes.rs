//! Nodes in real, separate OS processes: actix on one side, ractor on the
//! other, both directions; and death watch across a `kill -9` and a restart.
//!
//! # How the child processes are made
//!
//! A child is this very test binary, executed again with
//!
//! ```text
//! <current_exe> --exact child_process --nocapture --ignored --test-threads=1
//! ```
//!
//! and the environment variable [`ROLE`] set. `child_process` is an
//! `#[ignore]`d test, so a normal `cargo test` never runs it, and it returns
//! at once unless [`ROLE`] is set, so `cargo test -- --ignored` does no harm
//! either. Because the child is the same binary, both processes share the
//! message types below by construction.
//!
//! The child prints `LISTENING <addr>` on stdout once its node listens and
//! its actor is exported; the parent reads stdout on a thread and waits for
//! that line. The child exits when its stdin closes (the parent closes it,
//! or dies), and the parent's [`ChildNode`] kills and reaps it on drop, so a
//! failing test leaves no orphans. Every wait is bounded; nothing sleeps to
//! synchronise: the tests await stdout lines, replies and monitors.

use std::io::{Read, Write};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use actix::prelude::*;
use ractor::{Actor as RactorActor, ActorProcessingErr, ActorRef};
use serde::{Deserialize, Serialize};
use tether::{Config, Node, RemoteError, ReplyPort, TellError, WatchEvent};
use tether_actix::RemoteAddr;
use tether_ractor::{CallError, RemoteActorRef, RemoteSupervisionEvent};
use tether_test_support::process::{rerun, Child};
use tether_test_support::within;
use tokio::sync::mpsc::UnboundedReceiver;

/// Selects the child's role; unset in the parent.
const ROLE: &str = "TETHER_CHILD_ROLE";
/// The only role so far: a node named [`CHILD_NAME`] running the [`Bridge`].
const ROLE_BRIDGE: &str = "bridge";
/// The name of the test function a child runs.
const CHILD_TEST: &str = "child_process";
const CHILD_NAME: &str = "child";
/// Why the child stops its actor, as the parent's watchers must hear it.
const STOP_REASON: &str = "stdin closed";
const PARENT_NAME: &str = "parent";
/// Bound on every wait that should be quick (process start, replies).
const T: Duration = Duration::from_secs(20);
const IDLE: Duration = Duration::from_secs(1);
const PING: Duration = Duration::from_millis(200);

/// Both processes use it: a silent peer is declared dead after 1 s.
fn config() -> Config {
    let mut cfg = Config::default();
    cfg.idle_timeout = IDLE;
    cfg.ping_interval = PING;
    // Bounds how long a connection refused as a duplicate waits for the
    // kept one (see a_frozen_child_is_lost_by_heartbeat_and_comes_back).
    cfg.handshake_timeout = Duration::from_secs(1);
    // These tests are about what a watcher hears the moment a link breaks
    // or goes silent: without reconnection, at once (with it, only when
    // reconnection gives up; tests/outage.rs covers that).
    cfg.reconnect.enabled = false;
    cfg
}

// ---------------------------------------------------------------------------
// Messages, shared by both processes.

/// Asked of the actix actor on the parent.
#[derive(actix::Message, Serialize, Deserialize, Debug)]
#[rtype(result = "String")]
struct Greet(String);

/// What the ractor actor on the child takes.
#[derive(Serialize, Deserialize)]
enum Bridge {
    /// Answered by the ractor actor itself.
    Shout(String, ReplyPort<String>),
    /// The child's process id, to show the answer crossed processes.
    Pid(ReplyPort<u32>),
    /// The ractor actor asks the actix actor it is handed (a ref inside a
    /// message) and relays its answer.
    AskActix { greeter: RemoteAddr<Greet>, name: String, reply: ReplyPort<Result<String, String>> },
    /// The same, finding the actix actor by name on the parent's node.
    AskByName { export: String, name: String, reply: ReplyPort<Result<String, String>> },
}

// ---------------------------------------------------------------------------
// The child process.

/// The child's entry point (see the module docs): a node named
/// [`CHILD_NAME`] on a multi-threaded tokio runtime, with a ractor actor
/// exported as `"bridge"`.
#[test]
#[ignore = "entry point of the child processes of the other tests"]
fn child_process() {
    let Ok(role) = std::env::var(ROLE) else { return };
    assert_eq!(role, ROLE_BRIDGE, "unknown child role");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let node = Node::new(Some(CHILD_NAME), config()).unwrap();
        let addr = node.listen("127.0.0.1:0").await.expect("child: listen");
        let (bridge, _) = RactorActor::spawn(None, BridgeActor, node.clone()).await.expect("child: spawn");
        tether_ractor::export(&node, Some("bridge"), bridge.clone()).expect("child: export");
        {
            let mut out = std::io::stdout().lock();
            // The harness has printed `test child_process ... ` without a
            // line break: start a line of our own.
            writeln!(out, "\nLISTENING {addr}").unwrap();
            out.flush().unwrap();
        }
        // Serve until the parent closes stdin (or dies).
        tokio::task::spawn_blocking(|| {
            let _ = std::io::stdin().lock().read_to_end(&mut Vec::new());
        })
        .await
        .unwrap();
        // Stop the actor, then leave: its watchers hear `Stopped`, with this
        // reason, before the node's goodbye.
        bridge.stop_and_wait(Some(STOP_REASON.into()), Some(T)).await.expect("child: stop the bridge");
        node.shutdown().await;
    });
    rt.shutdown_timeout(Duration::from_secs(1));
}

/// A local ractor actor that passes the supervision-shaped events of its
/// watches to the test.
struct Supervisor;

impl Supervisor {
    async fn spawn() -> (ActorRef<RemoteSupervisionEvent>, UnboundedReceiver<RemoteSupervisionEvent>) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let (actor, _) = RactorActor::spawn(None, Supervisor, tx).await.expect("spawn the supervisor");
        (actor, rx)
    }
}

impl RactorActor for Supervisor {
    type Msg = RemoteSupervisionEvent;
    type State = tokio::sync::mpsc::UnboundedSender<RemoteSupervisionEvent>;
    type Arguments = Self::State;

    async fn pre_start(&self, _: ActorRef<Self::Msg>, out: Self::State) -> Result<Self::State, ActorProcessingErr> {
        Ok(out)
    }

    async fn handle(
        &self,
        _: ActorRef<Self::Msg>,
        event: RemoteSupervisionEvent,
        out: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let _ = out.send(event);
        Ok(())
    }
}

struct BridgeActor;

impl RactorActor for BridgeActor {
    type Msg = Bridge;
    type State = Node;
    type Arguments = Node;

    async fn pre_start(&self, _: ActorRef<Bridge>, node: Node) -> Result<Node, ActorProcessingErr> {
        Ok(node)
    }

    async fn handle(&self, _: ActorRef<Bridge>, msg: Bridge, node: &mut Node) -> Result<(), ActorProcessingErr> {
        match msg {
            Bridge::Shout(text, reply) => {
                let _ = reply.send(text.to_uppercase());
            }
            Bridge::Pid(reply) => {
                let _ = reply.send(std::process::id());
            }
            Bridge::AskActix { greeter, name, reply } => {
                let answer = greeter.send(Greet(name)).await.map_err(|e| e.to_string());
                let _ = reply.send(answer);
            }
            Bridge::AskByName { export, name, reply } => {
                let answer = async {
                    let parent = node.peers().into_iter().next().ok_or("not connected to the parent")?;
                    let greeter =
                        tether_actix::lookup::<Greet>(node, parent, &export).await.map_err(|e| e.to_string())?;
                    greeter.send(Greet(name)).await.map_err(|e| e.to_string())
                }
                .await;
                let _ = reply.send(answer);
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// The parent's side: child processes, and the actix actors.

/// A running child process; killed and reaped on drop (its [`Child`] is).
struct ChildNode {
    child: Child,
    /// The child's stdout, line by line; closes when the child exits.
    lines: UnboundedReceiver<(Instant, String)>,
    /// Where its node listens.
    addr: String,
}

impl ChildNode {
    /// Starts a child and waits until its node listens.
    async fn start() -> ChildNode {
        let (child, lines) = Child::with_lines(rerun(CHILD_TEST).env(ROLE, ROLE_BRIDGE));
        let mut child = ChildNode { child, lines, addr: String::new() };
        // The test harness prints its own lines too; skip them.
        let addr = tokio::time::timeout(T, async {
            loop {
                match child.lines.recv().await {
                    Some((_, line)) => {
                        if let Some(addr) = line.strip_prefix("LISTENING ") {
                            break addr.to_owned();
                        }
                    }
                    None => panic!("the child exited before listening"),
                }
            }
        })
        .await
        .expect("the child did not start listening in time");
        child.addr = addr;
        child
    }

    fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// `kill -9`, and reap.
    fn kill(&mut self) {
        self.child.kill();
    }

    /// Sends a signal with kill(1), e.g. `-STOP`.
    #[cfg(unix)]
    fn signal(&self, sig: &str) {
        self.child.signal(sig);
    }

    /// Closes the child's stdin and waits (bounded) for it to exit.
    async fn shut_down(mut self) -> ExitStatus {
        self.child.close_stdin();
        // Its stdout closes when it exits.
        tokio::time::timeout(T, async { while self.lines.recv().await.is_some() {} })
            .await
            .expect("the child did not exit after its stdin closed");
        self.child.wait()
    }
}

/// The actix actor the child's ractor actor asks.
struct Greeter;

impl actix::Actor for Greeter {
    type Context = Context<Self>;
}

impl Handler<Greet> for Greeter {
    type Result = String;

    fn handle(&mut self, Greet(name): Greet, _: &mut Context<Self>) -> String {
        format!("hello {name}, from actix in process {}", std::process::id())
    }
}

/// An actix actor that asks the child's ractor actor (local message only).
#[derive(actix::Message)]
#[rtype(result = "Result<String, String>")]
struct AskChild {
    bridge: RemoteActorRef<Bridge>,
    text: String,
}

struct Asker;

impl actix::Actor for Asker {
    type Context = Context<Self>;
}

impl Handler<AskChild> for Asker {
    type Result = ResponseFuture<Result<String, String>>;

    fn handle(&mut self, AskChild { bridge, text }: AskChild, _: &mut Context<Self>) -> Self::Result {
        Box::pin(async move { bridge.ask(|reply| Bridge::Shout(text, reply), T).await.map_err(|e| e.to_string()) })
    }
}

/// Runs a parent's test body in an actix `System` (a tokio runtime, on
/// which the parent's node runs too), bounded by `limit`.
fn in_system<F: std::future::Future<Output = ()>>(limit: Duration, body: F) {
    System::new().block_on(within(limit, body));
}

// ---------------------------------------------------------------------------
// The tests.

#[test]
fn actix_and_ractor_ask_each_other_across_processes() {
    in_system(Duration::from_secs(60), async {
        let child = ChildNode::start().await;
        let node = Node::new(Some(PARENT_NAME), config()).unwrap();
        let child_id = node.connect(&child.addr).await.expect("connect to the child");
        assert_ne!(child_id, node.id());

        let greeter = tether_actix::export(&node, Some("greeter"), Greeter.start()).unwrap();
        let bridge = tether_ractor::lookup::<Bridge>(&node, child_id, "bridge").await.expect("lookup bridge");
        let pid = bridge.ask(Bridge::Pid, T).await.expect("ask the child's pid");
        assert_eq!(pid, child.pid());
        assert_ne!(pid, std::process::id());

        // actix on the parent asks ractor on the child.
        let asker = Asker.start();
        for i in 0..10 {
            let text = format!("question {i} from actix");
            let answer = asker.send(AskChild { bridge: bridge.clone(), text: text.clone() }).await.unwrap();
            assert_eq!(answer, Ok(text.to_uppercase()));
        }

        // ractor on the child asks actix on the parent: with a ref handed
        // over inside the message, and by name.
        let expected = format!("hello ractor, from actix in process {}", std::process::id());
        for _ in 0..10 {
            let answer = bridge
                .ask(|reply| Bridge::AskActix { greeter: greeter.clone(), name: "ractor".into(), reply }, T)
                .await
                .expect("the child's actor answers");
            assert_eq!(answer.as_deref(), Ok(expected.as_str()));
        }
        let answer = bridge
            .ask(|reply| Bridge::AskByName { export: "greeter".into(), name: "ractor".into(), reply }, T)
            .await
            .expect("the child's actor answers");
        assert_eq!(answer.as_deref(), Ok(expected.as_str()));

        // Both at once, interleaved on the one connection.
        let asks = (0..20).map(|i| {
            let (asker, bridge, greeter) = (asker.clone(), bridge.clone(), greeter.clone());
            async move {
                if i % 2 == 0 {
                    let answer = asker.send(AskChild { bridge, text: format!("n{i}") }).await.unwrap();
                    assert_eq!(answer, Ok(format!("N{i}")));
                } else {
                    let name = format!("n{i}");
                    let answer = bridge
                        .ask(|reply| Bridge::AskActix { greeter, name: name.clone(), reply }, T)
                        .await
                        .unwrap()
                        .unwrap();
                    assert!(answer.starts_with(&format!("hello {name}, ")), "{answer}");
                }
            }
        });
        futures::future::join_all(asks).await;

        // Closing its stdin ends the child, which stops its actor and shuts
        // its node down; the parent hears that the actor stopped, and then
        // that the node left.
        let mut monitor = bridge.monitor();
        assert!(futures::poll!(&mut monitor).is_pending());
        // Answered on the control channel after the watch: the child holds it.
        tether_ractor::lookup::<Bridge>(&node, child_id, "bridge").await.unwrap();
        let status = child.shut_down().await;
        assert!(status.success(), "child exited with {status}");
        assert_eq!(within(T, monitor).await, WatchEvent::Stopped { reason: Some(STOP_REASON.into()) });
        assert_eq!(within(T, bridge.monitor()).await, WatchEvent::NodeLeft);
    });
}

/// The parent here is a plain multi-threaded tokio program (as a ractor
/// program is): the node's tasks run on several threads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn death_watch_across_kill_9_and_restart() {
    within(Duration::from_secs(60), async {
        let node = Node::new(Some(PARENT_NAME), config()).unwrap();

        // First incarnation.
        let mut first = ChildNode::start().await;
        let old_id = node.connect(&first.addr).await.expect("connect to the child");
        let old = tether_ractor::lookup::<Bridge>(&node, old_id, "bridge").await.expect("lookup bridge");
        assert_eq!(old.ask(Bridge::Pid, T).await.unwrap(), first.pid());

        // Watching starts when the monitor is first polled: spawn it and let
        // it run once, so the watch is in place (or on its way) before the
        // kill. Either way the answer must be `NodeLost`.
        let watching = tokio::spawn(old.monitor());
        tokio::task::yield_now().await;
        // And a local ractor actor watching it the ractor way.
        let (supervisor, mut supervised) = Supervisor::spawn().await;
        let _watch = tether_ractor::watch(&old, supervisor, |e: RemoteSupervisionEvent| e);
        let killed = Instant::now();
        first.kill();
        let event = tokio::time::timeout(IDLE + Duration::from_secs(1), watching)
            .await
            .expect("NodeLost not reported within the idle timeout")
            .unwrap();
        let detected = killed.elapsed();
        assert_eq!(event, WatchEvent::NodeLost);
        eprintln!("kill -9 noticed after {detected:?} (idle timeout {IDLE:?})");
        let event = within(T, supervised.recv()).await;
        assert_eq!(event, Some(RemoteSupervisionEvent::NodeLost(old.id())));
        assert!(!node.peers().contains(&old_id));
        // A monitor made now reports the same at once; a tell fails.
        assert_eq!(within(T, old.monitor()).await, WatchEvent::NodeLost);
        match old.send(Bridge::Shout("anyone?".into(), ReplyPort::channel().0)).await {
            Err(TellError::Unreachable { error: RemoteError::NodeLost(id), .. }) => assert_eq!(id, old_id),
            other => panic!("tell to a killed node: {:?}", other.map_err(|e| e.to_string())),
        }

        // Second incarnation: same name, new process, new NodeId, another port.
        let second = ChildNode::start().await;
        let new_id = node.connect(&second.addr).await.expect("connect to the restarted child");
        assert_ne!(new_id, old_id);
        let fresh = tether_ractor::lookup::<Bridge>(&node, new_id, "bridge").await.expect("lookup after restart");
        assert_ne!(fresh, old);
        assert_eq!(fresh.ask(Bridge::Pid, T).await.unwrap(), second.pid());
        assert_eq!(fresh.ask(|r| Bridge::Shout("again".into(), r), T).await.unwrap(), "AGAIN");

        // The old ref knows its node restarted.
        assert_eq!(within(T, old.monitor()).await, WatchEvent::NodeRestarted);
        match old.send(Bridge::Shout("anyone?".into(), ReplyPort::channel().0)).await {
            Err(TellError::Unreachable { error: RemoteError::NodeRestarted(id), .. }) => assert_eq!(id, old_id),
            other => panic!("tell to a restarted node: {:?}", other.map_err(|e| e.to_string())),
        }
        match old.ask(Bridge::Pid, T).await {
            Err(CallError::Unreachable(RemoteError::NodeRestarted(id))) => assert_eq!(id, old_id),
            other => panic!("call to a restarted node: {other:?}"),
        }
        // And the new incarnation is unaffected.
        assert_eq!(fresh.ask(Bridge::Pid, T).await.unwrap(), second.pid());

        let status = second.shut_down().await;
        assert!(status.success(), "child exited with {status}");
    })
    .await;
}

/// A process that stops its actor and exits gives the actor's watchers
/// `Stopped` with the stop's reason, not `NodeLeft` or `NodeLost`, every
/// time: the stop notice leaves before the node's goodbye. 100 children, four at a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_that_stops_its_actor_and_exits_reports_stopped() {
    within(Duration::from_secs(240), async {
        let node = Node::new(Some(PARENT_NAME), config()).unwrap();
        for batch in 0..25 {
            let rounds = (0..4).map(|i| {
                let node = node.clone();
                async move {
                    let child = ChildNode::start().await;
                    let id = node.connect(&child.addr).await.expect("connect to the child");
                    let bridge = tether_ractor::lookup::<Bridge>(&node, id, "bridge").await.expect("lookup bridge");
                    let watching = bridge.monitor();
                    // A lookup is answered on the control channel the watch
                    // went out on, after it: then the child holds the watch.
                    // (An ask would not do: it travels on the actor's route,
                    // which may overtake the control channel.)
                    tether_ractor::lookup::<Bridge>(&node, id, "bridge").await.expect("lookup bridge again");
                    assert_eq!(bridge.ask(Bridge::Pid, T).await.unwrap(), child.pid());
                    let status = child.shut_down().await;
                    assert!(status.success(), "child exited with {status}");
                    (batch * 4 + i, within(T, watching).await)
                }
            });
            for (round, event) in futures::future::join_all(rounds).await {
                assert_eq!(event, WatchEvent::Stopped { reason: Some(STOP_REASON.into()) }, "child {round}");
            }
        }
    })
    .await;
}

/// A frozen process keeps its sockets open: only the heartbeat can tell.
/// After it thaws, the same incarnation is reachable again (not a restart).
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_child_is_lost_by_heartbeat_and_comes_back() {
    within(Duration::from_secs(60), async {
        let node = Node::new(Some(PARENT_NAME), config()).unwrap();
        let child = ChildNode::start().await;
        let id = node.connect(&child.addr).await.expect("connect to the child");
        let bridge = tether_ractor::lookup::<Bridge>(&node, id, "bridge").await.expect("lookup bridge");
        assert_eq!(bridge.ask(Bridge::Pid, T).await.unwrap(), child.pid());

        let watching = tokio::spawn(bridge.monitor());
        tokio::task::yield_now().await;
        let frozen = Instant::now();
        child.signal("-STOP");
        let event = tokio::time::timeout(IDLE + Duration::from_secs(2), watching)
            .await
            .expect("a silent peer not noticed within the idle timeout")
            .unwrap();
        let detected = frozen.elapsed();
        eprintln!("SIGSTOP noticed after {detected:?} (idle timeout {IDLE:?}, pings every {PING:?})");
        assert_eq!(event, WatchEvent::NodeLost);
        // Noticed by silence, not by a closed socket: the last frame from
        // the child came at most about a ping interval before it froze.
        assert!(detected >= IDLE - 2 * PING, "noticed after {detected:?}, before the idle timeout");

        child.signal("-CONT");
        // Until the thawed child notices that its old link is dead (its FIN
        // or its own idle timeout, at most `IDLE` away), it may keep that
        // link (if it decides the tie-break) and close a new one from the
        // same node as a duplicate; our `connect` then waits for a kept
        // connection that never comes and times out. Nothing tells us when
        // it has noticed, so retry, paced and bounded.
        let mut refused = 0;
        let again = within(IDLE + Duration::from_secs(5), async {
            loop {
                match node.connect(&child.addr).await {
                    Ok(id) => break id,
                    Err(e) if e.is_timeout() || matches!(e.cause(), tether::ConnectError::Eof) => refused += 1,
                    Err(e) => panic!("connect to the thawed child: {e}"),
                }
                tokio::time::sleep(PING / 4).await;
            }
        })
        .await;
        if refused > 0 {
            eprintln!("the thawed child refused {refused} connection(s) as duplicates");
        }
        assert_eq!(again, id, "same process, same incarnation");
        // The old ref works again: its route reopens on the new link.
        assert_eq!(bridge.ask(Bridge::Pid, T).await.unwrap(), child.pid());
        let status = child.shut_down().await;
        assert!(status.success(), "child exited with {status}");
    })
    .await;
}
