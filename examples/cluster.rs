//! A cluster of four OS processes: they find each other from one seed, greet
//! each other's actors, and see one member leave and another crash.
//!
//! ```sh
//! cargo run --example cluster
//! ```
//!
//! The first process, the narrator, starts four copies of itself, node-1 to
//! node-4, and prints what each says, prefixed by its name. Each member runs
//! a tether node with a ractor actor exported as "greeter" and joins the
//! cluster: node-1 is the seed; the others know only node-1's address. They
//! share a cookie (handed down in `CLUSTER_COOKIE`): other gossip is dropped.
//!
//! 1. Each member prints the cluster events it sees: `NodeUp` for every
//!    other member, though it was told of node-1 only.
//! 2. When node-N sees node-N+1 up, it looks up that node's "greeter" by node
//!    id and asks it for a greeting. Nobody dials: `Node::lookup` connects
//!    to a member when first needed.
//! 3. node-4 is told to leave: it calls `Node::shutdown`, and the others
//!    print `NodeLeft`.
//! 4. node-3 is killed with SIGKILL. It says nothing; the others print
//!    `NodeDown` once the failure detector gives up on it (about 3 s).
//! 5. node-2 leaves, then node-1, and the narrator exits.
//!
//! Every wait is bounded; on a failure the narrator kills the members and
//! exits with an error. A member whose narrator is gone leaves.

use std::error::Error;
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use ractor::{ActorProcessingErr, ActorRef};
use serde::{Deserialize, Serialize};
use tether::cluster::{Cluster, ClusterConfig, ClusterEvent, Member};
use tether::{Config, Cookie, Node, ReplyPort};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

const MEMBERS: usize = 4;
const COOKIE: &str = "CLUSTER_COOKIE";
/// How long each step of the story may take (NodeDown takes about 3 s).
const STEP: Duration = Duration::from_secs(15);

type Res<T> = Result<T, Box<dyn Error>>;

/// What a greeter takes: a greeting, answered on the reply port.
#[derive(Serialize, Deserialize)]
struct Greet {
    from: String,
    reply: ReplyPort<String>,
}

fn main() -> Res<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        // `--member node-2 [--seed 127.0.0.1:4000]`
        Some("--member") => {
            let name = args.get(2).ok_or("--member needs a name")?.clone();
            let seed = args.get(4).map(|s| s.parse()).transpose()?;
            rt.block_on(member(&name, seed))
        }
        _ => rt.block_on(narrator()),
    }
}

// ---- a member ----

struct Greeter;

impl ractor::Actor for Greeter {
    type Msg = Greet;
    type State = String;
    type Arguments = String;

    async fn pre_start(&self, _: ActorRef<Greet>, me: String) -> Result<String, ActorProcessingErr> {
        Ok(me)
    }

    async fn handle(&self, _: ActorRef<Greet>, msg: Greet, me: &mut String) -> Result<(), ActorProcessingErr> {
        say(me, format!("greeter <- a greeting from {}", msg.from));
        let _ = msg.reply.send(format!("hello {}, this is {me} in pid {}", msg.from, std::process::id()));
        Ok(())
    }
}

async fn member(me: &str, seed: Option<SocketAddr>) -> Res<()> {
    let mut cfg = Config::default();
    cfg.cookie = Some(Cookie::new(std::env::var(COOKIE)?));
    let node = Node::new(Some(me), cfg)?;
    let addr = node.listen("127.0.0.1:0").await?;
    let (greeter, _) = ractor::Actor::spawn(None, Greeter, me.to_owned()).await?;
    tether_ractor::export(&node, Some("greeter"), greeter)?;
    // Exported before joining: once others see this node, its greeter is there.
    let cluster =
        Cluster::join(&node, addr, seed.into_iter().fold(ClusterConfig::default(), ClusterConfig::seed)).await?;
    let seed = seed.map_or("I am the seed".to_owned(), |s| format!("seed {s}"));
    say(me, format!("listening on {addr} (TCP, and UDP for gossip), pid {}; {seed}", std::process::id()));

    // The narrator writes a line (or goes away) when this member should leave.
    let (leave, mut told_to_leave) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let _ = std::io::stdin().read_line(&mut String::new());
        let _ = leave.send(());
    });
    let next = format!("node-{}", me.trim_start_matches("node-").parse::<usize>()? % MEMBERS + 1);
    let mut events = cluster.subscribe();
    loop {
        tokio::select! {
            event = events.recv() => {
                let (what, m) = match event? {
                    ClusterEvent::NodeUp(m) => ("NodeUp", m),
                    ClusterEvent::NodeDown { member, .. } => ("NodeDown", member),
                    ClusterEvent::NodeLeft(m) => ("NodeLeft", m),
                    ClusterEvent::NodeRestarted { member, .. } => ("NodeRestarted", member),
                    _ => continue, // kinds added in later versions
                };
                say(me, format!("{what} {} at {}", m.name.as_deref().unwrap_or_default(), m.addr));
                if what == "NodeUp" && m.name.as_ref() == Some(&next) {
                    tokio::spawn(greet(node.clone(), me.to_owned(), m));
                }
            }
            _ = &mut told_to_leave => break,
        }
    }
    say(me, "leaving: Node::shutdown");
    node.shutdown().await;
    Ok(())
}

/// Looks up the greeter of `to` by node id (connecting on demand) and asks.
async fn greet(node: Node, me: String, to: Member) {
    let asked = async {
        let greeter = node.lookup::<Greet>(to.id, "greeter").await?;
        Res::Ok(greeter.ask(|reply| Greet { from: me.clone(), reply }, STEP).await?)
    };
    let name = to.name.unwrap_or_default();
    match asked.await {
        Ok(text) => say(&me, format!("looked up {name}'s greeter, connected on demand; it answered {text:?}")),
        Err(e) => say(&me, format!("greeting {name} failed: {e}")),
    }
}

fn say(who: &str, line: impl std::fmt::Display) {
    println!("[{who}] {line}");
}

// ---- the narrator ----

/// A member process, and the pipe it takes orders from.
struct Process {
    name: String,
    child: Child,
    stdin: ChildStdin,
}

impl Process {
    /// Tells the member to leave, and waits until it has.
    async fn leave(&mut self) -> Res<()> {
        say("narrator", format!("{}, please leave", self.name));
        self.stdin.write_all(b"leave\n").await?;
        let exit = tokio::time::timeout(STEP, self.child.wait()).await;
        let status = exit.map_err(|_| format!("{} stayed", self.name))??;
        status.success().then_some(()).ok_or_else(|| format!("{} failed: {status}", self.name).into())
    }
}

async fn narrator() -> Res<()> {
    // A fresh secret for this run; a deployment would read it from its secrets.
    let cookie = uuid::Uuid::new_v4().to_string();
    let (out, lines) = unbounded_channel();
    let mut story = Story { lines, told: vec![] };
    say("narrator", format!("starting {MEMBERS} members; node-1 is the seed"));
    let (mut procs, mut seed) = (vec![], None);
    for n in 1..=MEMBERS {
        procs.push(start(&format!("node-{n}"), seed, &cookie, &out)?);
        // "[node-1] listening on <address> ..."
        let listening = story.until(&[(&format!("[node-{n}] listening on "), 1)]).await?;
        seed = seed.or(Some(listening.split_whitespace().nth(3).ok_or("no address")?.parse()?));
    }
    drop(out);
    let [first, second, third, fourth] = &mut procs[..] else { unreachable!("{MEMBERS} members") };

    // Everyone sees the 3 others, and greets and is greeted.
    let greetings = [(" NodeUp ", MEMBERS * (MEMBERS - 1)), (" answered ", MEMBERS), ("greeter <- ", MEMBERS)];
    story.until(&greetings).await?;
    say("narrator", "everyone knows everyone");
    fourth.leave().await?;
    story.until(&[("NodeLeft node-4", MEMBERS - 1)]).await?;

    say("narrator", "kill -9 node-3");
    let killed = std::time::Instant::now();
    third.child.kill().await?;
    story.until(&[("NodeDown node-3", MEMBERS - 2)]).await?;
    say("narrator", format!("both saw node-3 down within {:.1} s of the kill", killed.elapsed().as_secs_f64()));

    second.leave().await?;
    story.until(&[("NodeLeft node-2", 1)]).await?;
    first.leave().await?;
    story.until(&[("[node-1] leaving", 1)]).await?;
    say("narrator", "the end");
    Ok(())
}

/// Starts member `name`; its lines go to `out`.
fn start(name: &str, seed: Option<SocketAddr>, cookie: &str, out: &UnboundedSender<String>) -> Res<Process> {
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.args(["--member", name]).env(COOKIE, cookie).stdin(Stdio::piped()).stdout(Stdio::piped());
    cmd.args(seed.map(|s| ["--seed".to_owned(), s.to_string()]).into_iter().flatten());
    // Dropped (on an early return), the child is killed.
    let mut child = cmd.kill_on_drop(true).spawn()?;
    let (stdin, stdout) = (child.stdin.take().ok_or("no stdin")?, child.stdout.take().ok_or("no stdout")?);
    let (mut stdout, out) = (BufReader::new(stdout).lines(), out.clone());
    tokio::spawn(async move {
        while let Ok(Some(line)) = stdout.next_line().await {
            let _ = out.send(line);
        }
    });
    Ok(Process { name: name.to_owned(), child, stdin })
}

/// The members' lines, and those printed so far.
struct Story {
    lines: UnboundedReceiver<String>,
    told: Vec<String>,
}

impl Story {
    /// Prints lines until, for each `(pattern, count)`, `count` lines so far
    /// contain `pattern`; returns the last line with the first pattern.
    async fn until(&mut self, goals: &[(&str, usize)]) -> Res<String> {
        let done = |told: &[String]| goals.iter().all(|(p, n)| told.iter().filter(|l| l.contains(p)).count() >= *n);
        let wait = async {
            while !done(&self.told) {
                let line = self.lines.recv().await.ok_or("every member's output ended")?;
                println!("{line}");
                self.told.push(line);
            }
            Res::Ok(())
        };
        tokio::time::timeout(STEP, wait).await.map_err(|_| format!("waited {STEP:?} for {goals:?}"))??;
        Ok(self.told.iter().rev().find(|l| l.contains(goals[0].0)).cloned().unwrap_or_default())
    }
}
