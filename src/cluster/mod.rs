//! Clusters: membership on a gossip engine, discovery from seeds, and
//! connections made on demand.
//!
//! A node joins with [`Cluster::join`]: it gossips over UDP on the address
//! its listener has (same IP and port number), learns every member from any
//! one live seed, and reports members going up, down, leaving and
//! restarting ([`Cluster::subscribe`]). Refs, lookups and messages to a
//! member's actors open a connection to it when first needed, with the
//! node's usual handshake, cookie, limits and reconnection policy.
//!
//! Membership is SWIM, run by [foca](https://docs.rs/foca) without I/O:
//! this module owns the socket, the timers and every byte (see
//! `docs/ARCHITECTURE.md` for why foca, and `docs/PROTOCOL.md` for the
//! datagram). Gossip is authenticated by the node's cookie
//! ([`Config::cookie`](crate::Config::cookie)): a datagram without a valid
//! tag is dropped before the engine reads it.
//!
//! # Failure detection
//!
//! Each member probes a random other every [`ClusterConfig::probe_period`];
//! one that answers neither directly (within
//! [`ClusterConfig::probe_rtt`]) nor through three others is suspected,
//! and declared down unless it refutes within
//! [`ClusterConfig::suspect_timeout`]. With the defaults a member that
//! dies is reported down everywhere in 2–3.5 s (2.1–3.5 s in the tests and
//! W7, across processes and network namespaces); the bound is
//! probabilistic, as SWIM's probes pick their targets at random.
//!
//! # Names, groups and topics
//!
//! Members publish names and group memberships of their actors; every
//! member keeps a replica, so [`Cluster::lookup`], [`Cluster::lookup_all`]
//! and [`Cluster::group_members`] need no round trip, and [`Group`] sends
//! pick a member by a [`Strategy`] and fail over before handing a message
//! over. A member's records go when its actor stops, and with the member
//! before its `NodeDown` or `NodeLeft` is published.
//!
//! ```
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use tether::cluster::{Cluster, ClusterConfig, NameEvent};
//! use tether::{Config, Mailbox, Node};
//!
//! /// An actor that prints what it is told.
//! struct Printer;
//! impl Mailbox<String> for Printer {
//!     fn deliver(&self, line: String) -> Result<(), String> {
//!         println!("{line}");
//!         Ok(())
//!     }
//!     fn stopped(&self) -> futures::future::BoxFuture<'static, ()> {
//!         Box::pin(std::future::pending())
//!     }
//! }
//!
//! let a = Node::new(Some("a"), Config::default())?;
//! let a_addr = a.listen("127.0.0.1:0").await?;
//! let on_a = Cluster::join(&a, a_addr, ClusterConfig::default()).await?;
//! let printer = a.export(None, Printer)?;
//! let _claim = on_a.register("printer", &printer)?;
//! on_a.join_group("printers", &printer)?;
//!
//! let b = Node::new(Some("b"), Config::default())?;
//! let b_addr = b.listen("127.0.0.1:0").await?;
//! let on_b = Cluster::join(&b, b_addr, ClusterConfig::default().seed(a_addr)).await?;
//! // The name reaches b once b has pulled a's records.
//! let mut arrivals = on_b.watch_name("printer");
//! assert_eq!(arrivals.recv().await?, NameEvent::Registered(printer.id()));
//!
//! let found = on_b.lookup::<String>("printer").await?;
//! found.tell("found by name".to_owned()).await?;
//! let printers = on_b.group::<String>("printers");
//! assert_eq!(printers.members().len(), 1);
//! printers.tell("sent to the group".to_owned()).await?;
//! # a.shutdown().await;
//! # b.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! # Example
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use tether::cluster::{Cluster, ClusterConfig, ClusterEvent};
//! use tether::{Config, Node};
//!
//! let seed = Node::new(Some("seed"), Config::default())?;
//! let seed_addr = seed.listen("127.0.0.1:0").await?;
//! let _first = Cluster::join(&seed, seed_addr, ClusterConfig::default()).await?;
//!
//! let node = Node::new(Some("worker"), Config::default())?;
//! let addr = node.listen("127.0.0.1:0").await?;
//! let cluster = Cluster::join(&node, addr, ClusterConfig::default().seed(seed_addr)).await?;
//! let mut events = cluster.subscribe();
//! match events.recv().await? {
//!     ClusterEvent::NodeUp(member) => assert_eq!(member.id, seed.id()),
//!     other => panic!("unexpected {other:?}"),
//! }
//! # Ok(())
//! # }
//! ```

mod driver;
mod engine;
mod envelope;
mod groups;
mod identity;
mod metrics;
mod names;
mod records;
mod seeds;
mod sync;
// The simulator and scenario tests, and the hostile-input checks that
// `crate::fuzz` drives too.
#[cfg(any(test, fuzzing, feature = "fuzzing"))]
pub(crate) mod tests;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use engine::GossipStats;
pub use groups::{Broadcast, Group, GroupEvent, GroupKey, GroupWatch, Strategy, Topic};
pub use identity::MAX_NAME;
pub use names::{Claim, NameEvent, NameWatch, RegistryError};
pub use records::MAX_KEY;

use crate::{Node, NodeId};

/// A member of the cluster as this node sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Member {
    /// The member's node id (new with each process).
    pub id: NodeId,
    /// The member's node name, if it has one.
    pub name: Option<String>,
    /// Where its listener (and its gossip socket) is.
    pub addr: SocketAddr,
    /// What this node last heard of it.
    pub status: MemberStatus,
}

/// Whether a member is in the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MemberStatus {
    /// Alive, as far as the failure detector knows.
    Up,
    /// Declared down by the failure detector.
    Down,
    /// Left gracefully ([`Node::shutdown`]).
    Left,
}

/// A change in the cluster, as [`Cluster::subscribe`] reports it.
///
/// Events about one member come in the order they happened to it; a member
/// at an address is one member across restarts.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClusterEvent {
    /// A member joined, or came back after being declared down (a healed
    /// partition, a long pause).
    NodeUp(Member),
    /// A member stopped answering: crashed, frozen, or cut off.
    NodeDown {
        /// The member, as last known.
        member: Member,
        /// Why it is considered down.
        reason: DownReason,
    },
    /// A new process took a member's address: `old` and its actors are
    /// gone; `member` is the new one, up.
    NodeRestarted {
        /// The node id of the process that went.
        old: NodeId,
        /// The process that took its place.
        member: Member,
    },
    /// A member shut down and said so.
    NodeLeft(Member),
}

/// Why a member is reported down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DownReason {
    /// It answered neither probes nor the members asked to probe it, and did
    /// not refute the suspicion in time.
    Unreachable,
}

/// Where a node looks for the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Seed {
    /// A member's address.
    Addr(SocketAddr),
    /// A DNS name resolving to members' addresses (all of them, as a
    /// Kubernetes headless service does), each with `port`. Resolved by the
    /// system's resolver at start and every [`ClusterConfig::seed_interval`].
    Dns {
        /// The name to resolve.
        host: String,
        /// The port every member listens on.
        port: u16,
    },
}

impl From<SocketAddr> for Seed {
    fn from(addr: SocketAddr) -> Seed {
        Seed::Addr(addr)
    }
}

/// How a node takes part in a cluster. Each field documents its default and
/// why.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ClusterConfig {
    /// Where to look for the cluster; none for the first member. A node
    /// needs one live seed to learn every member. Default none.
    pub seeds: Vec<Seed>,
    /// The address other members reach this node at, when it differs from
    /// the listening address (a listener on `0.0.0.0`, NAT). Default: the
    /// listening address.
    pub advertise: Option<SocketAddr>,
    /// How often seeds are resolved again, and announced to if they are not
    /// members (this is how split clusters find each other again, and how a
    /// node that lost every member gets back). Default 5 s.
    pub seed_interval: Duration,
    /// How often a random member is probed. Default 500 ms: with the other
    /// defaults, a dead member is reported everywhere within 5 s, and at
    /// rest a node sends about 0.4 KB/s (W7, 32 members).
    pub probe_period: Duration,
    /// How long a probe waits for a direct answer before asking three other
    /// members to probe too. Default 200 ms, generous for a LAN or one host
    /// under load.
    pub probe_rtt: Duration,
    /// How long a suspected member has to refute before it is declared
    /// down. Default 1.5 s: a refutation takes a gossip round or two (tens of
    /// milliseconds on a LAN, also on a loaded host: no false suspicion
    /// lasted in 2 minutes of 8 members with every core busy), and a member
    /// stalled that long is not serving anyway. With it, a dead member is
    /// reported everywhere in 2.5–3.5 s, leaving room under 5 s.
    pub suspect_timeout: Duration,
    /// How often news (joins, suspicions, leaves) is pushed to three random
    /// members while there is any. Default 200 ms: 32 members learn of a
    /// join in a few rounds, and nothing is sent at rest.
    pub gossip_interval: Duration,
    /// Most members this node tracks (live, and recently down or left); a
    /// full view forgets the member down longest. Default 1,024.
    pub max_members: usize,
    /// Events a subscriber may fall behind by before it misses some (and is
    /// told how many: [`EventsError::Lagged`]). Default 256: a subscriber
    /// that keeps up needs one; the buffer is allocated whole at join (256
    /// events take about 25 KB).
    pub event_buffer: usize,
    /// Most registry records (names and group memberships) a member may
    /// publish; a set pulled with more is refused whole. Default 10,000: a
    /// member's set is pulled whole when it changes, and 10,000 records take
    /// about 1 MB.
    pub max_records: usize,
    /// Connections to members over TLS (feature `tls`). Gossip is then
    /// still authenticated by the cookie, which must be set. Default none:
    /// plain TCP.
    #[cfg(feature = "tls")]
    pub tls: Option<MemberTls>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            seeds: Vec::new(),
            advertise: None,
            seed_interval: Duration::from_secs(5),
            probe_period: Duration::from_millis(500),
            probe_rtt: Duration::from_millis(200),
            suspect_timeout: Duration::from_millis(1500),
            gossip_interval: Duration::from_millis(200),
            max_members: 1024,
            event_buffer: 256,
            max_records: 10_000,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }
}

impl ClusterConfig {
    /// Adds a seed: an address (`SocketAddr`) or a [`Seed::Dns`] name.
    pub fn seed(mut self, seed: impl Into<Seed>) -> Self {
        self.seeds.push(seed.into());
        self
    }

    fn validate(&self) -> Result<(), ClusterError> {
        let bad = |why| Err(ClusterError::Config(why));
        if self.probe_rtt.is_zero() || self.probe_period <= self.probe_rtt {
            return bad("probe_rtt must be non-zero and below probe_period");
        }
        if self.suspect_timeout.is_zero() || self.gossip_interval.is_zero() || self.seed_interval.is_zero() {
            return bad("suspect_timeout, gossip_interval and seed_interval must be non-zero");
        }
        if self.max_members == 0 || self.event_buffer == 0 || self.max_records == 0 {
            return bad("max_members, event_buffer and max_records must be at least 1");
        }
        Ok(())
    }
}

/// Why a node could not join.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// A setting is out of range.
    #[error("invalid cluster config: {0}")]
    Config(&'static str),
    /// The advertised address is unspecified (`0.0.0.0`, `::`): set
    /// [`ClusterConfig::advertise`].
    #[error("cannot advertise {0}: set ClusterConfig::advertise to an address members can reach")]
    Unspecified(SocketAddr),
    /// The node's name is longer than [`MAX_NAME`] bytes.
    #[error("node name longer than {MAX_NAME} bytes")]
    NameTooLong,
    /// The node already joined a cluster.
    #[error("the node is already in a cluster")]
    AlreadyJoined,
    /// The node is shut down.
    #[error("the node is shut down")]
    NodeShutDown,
    /// The gossip socket could not be bound.
    #[error("binding the gossip socket on {addr}: {error}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        error: std::io::Error,
    },
}

/// Why [`Subscription::recv`] returned no event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EventsError {
    /// The subscriber fell more than [`ClusterConfig::event_buffer`] events
    /// behind: this many of the oldest were dropped for it (the next `recv`
    /// goes on with the oldest kept). [`Cluster::members`] tells the state
    /// now.
    #[error("{0} cluster events missed")]
    Lagged(u64),
    /// The node left the cluster (shut down): no more events.
    #[error("the cluster membership ended")]
    Closed,
}

/// What the driver publishes for handles: the view and its events, under one
/// lock, so a subscriber's initial state and its first event follow without
/// a gap or an overlap.
pub(crate) struct Published {
    me: Member,
    members: Vec<Member>,
    /// Dropped when the membership ends, which ends every subscription.
    events: Option<tokio::sync::broadcast::Sender<ClusterEvent>>,
    stats: GossipStats,
}

pub(crate) struct Shared {
    published: Mutex<Published>,
    #[cfg(feature = "tls")]
    tls: Option<MemberTls>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Published> {
        self.published.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Shared {
    fn address(&self, node: NodeId) -> Option<SocketAddr> {
        let p = self.lock();
        p.members.iter().find(|m| m.id == node && m.status == MemberStatus::Up).map(|m| m.addr)
    }
}

impl crate::node::Directory for Shared {
    fn dialer(&self, node: NodeId) -> Option<(SocketAddr, crate::conn::Dialer)> {
        let addr = self.address(node)?;
        #[cfg(feature = "tls")]
        if let Some(tls) = &self.tls {
            let connector = tokio_rustls::TlsConnector::from(tls.client.clone());
            // Checked by `Cluster::join`.
            let name = crate::transport::tls::server_name(&tls.server_name).ok()?;
            let target = addr.to_string();
            let dial = crate::conn::dialer(move || {
                let (connector, name, target) = (connector.clone(), name.clone(), target.clone());
                async move { crate::transport::tls::connect(connector, name, target).await }
            });
            return Some((addr, dial));
        }
        Some((addr, crate::conn::dialer(move || tokio::net::TcpStream::connect(addr))))
    }
}

/// How a member dials other members over TLS (feature `tls`): every member
/// listens with [`Node::listen_tls`], and its certificate is valid for
/// `server_name` under `client`'s roots (`client` may carry this member's
/// own certificate, for mutual TLS).
#[cfg(feature = "tls")]
#[derive(Clone, Debug)]
pub struct MemberTls {
    /// Roots (and, for mutual TLS, this member's certificate).
    pub client: Arc<crate::transport::tls::rustls::ClientConfig>,
    /// The name every member's certificate is valid for.
    pub server_name: String,
}

/// A node's membership in a cluster. Cheap to clone; the membership lasts
/// as long as the node (it leaves on [`Node::shutdown`]).
#[derive(Clone)]
pub struct Cluster {
    node: Node,
    shared: Arc<Shared>,
    replica: Arc<sync::Replica>,
    /// Refs found by name, kept so that the next lookup of the name needs no
    /// round trip (see `names.rs`).
    found: Arc<names::Found>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster").field("me", &self.shared.lock().me).finish()
    }
}

impl Cluster {
    /// Makes `node` a member: binds UDP on `listen` (the address its
    /// listener is bound to; `Node::listen` returns it) and starts gossiping
    /// to the seeds. Returns at once; [`Cluster::subscribe`] tells when
    /// members come up.
    ///
    /// When `node` shuts down it leaves the cluster: members report
    /// [`ClusterEvent::NodeLeft`]. Dropping the node's last handle does the
    /// same without waiting (a `Cluster` holds one). A process that dies
    /// without either is reported [`ClusterEvent::NodeDown`].
    pub async fn join(node: &Node, listen: SocketAddr, cfg: ClusterConfig) -> Result<Cluster, ClusterError> {
        cfg.validate()?;
        let addr = cfg.advertise.unwrap_or(listen);
        if addr.ip().is_unspecified() || addr.port() == 0 {
            return Err(ClusterError::Unspecified(addr));
        }
        if node.inner().directory.get().is_some() {
            return Err(ClusterError::AlreadyJoined);
        }
        let name = node.name().map(str::to_owned);
        if name.as_ref().is_some_and(|n| n.len() > MAX_NAME) {
            return Err(ClusterError::NameTooLong);
        }
        #[cfg(feature = "tls")]
        if cfg.tls.is_some() && node.inner().cfg.cookie.is_none() {
            return Err(ClusterError::Config("members over TLS need a cookie (Config::cookie) to authenticate gossip"));
        }
        #[cfg(feature = "tls")]
        if let Some(tls) = &cfg.tls {
            if crate::transport::tls::server_name(&tls.server_name).is_err() {
                return Err(ClusterError::Config("MemberTls::server_name is not a valid server name"));
            }
        }
        let socket =
            tokio::net::UdpSocket::bind(listen).await.map_err(|error| ClusterError::Bind { addr: listen, error })?;
        let started =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let me = identity::Ident { node: node.id(), addr, started, bump: 0, name, leaving: false };
        let seed = u64::from_le_bytes(node.id().0.as_bytes()[..8].try_into().expect("8 bytes"));
        let engine = engine::Engine::new(me, &cfg, node.inner().cfg.cookie.as_ref(), seed);
        let shared = Arc::new(Shared {
            #[cfg(feature = "tls")]
            tls: cfg.tls.clone(),
            published: Mutex::new(Published {
                me: engine.me(),
                members: Vec::new(),
                events: Some(tokio::sync::broadcast::channel(cfg.event_buffer).0),
                stats: GossipStats::default(),
            }),
        });
        let replica = Arc::new(sync::Replica::new(node.id(), cfg.max_records, cfg.event_buffer));
        driver::start(node, engine, socket, cfg, shared.clone(), replica.clone())?;
        Ok(Cluster { node: node.clone(), shared, replica, found: Default::default() })
    }

    /// The node this membership is of.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// This node as the cluster knows it.
    pub fn me(&self) -> Member {
        self.shared.lock().me.clone()
    }

    /// Every member this node knows (itself excluded), live, down and left,
    /// ordered by address. After this node left, the view as it was then.
    pub fn members(&self) -> Vec<Member> {
        self.shared.lock().members.clone()
    }

    /// The address of `node`, if it is a member that is up.
    pub fn address(&self, node: NodeId) -> Option<SocketAddr> {
        self.shared.address(node)
    }

    /// Events from now on, starting with a [`ClusterEvent::NodeUp`] for each
    /// member up now.
    ///
    /// Bounded: a subscriber that falls more than
    /// [`ClusterConfig::event_buffer`] events behind misses the oldest and
    /// is told how many ([`EventsError::Lagged`]); one that keeps up misses
    /// nothing.
    pub fn subscribe(&self) -> Subscription {
        let p = self.shared.lock();
        let Some(events) = &p.events else {
            // Left: nothing to report, ever.
            return Subscription { initial: VecDeque::new(), rx: tokio::sync::broadcast::channel(1).1 };
        };
        let initial =
            p.members.iter().filter(|m| m.status == MemberStatus::Up).cloned().map(ClusterEvent::NodeUp).collect();
        Subscription { initial, rx: events.subscribe() }
    }

    /// Counters of the gossip this node sent and received.
    pub fn stats(&self) -> GossipStats {
        self.shared.lock().stats
    }
}

/// A stream of [`ClusterEvent`]s; see [`Cluster::subscribe`].
#[derive(Debug)]
pub struct Subscription {
    initial: VecDeque<ClusterEvent>,
    rx: tokio::sync::broadcast::Receiver<ClusterEvent>,
}

impl Subscription {
    /// The events as a [`Stream`](futures::Stream), ending when the node
    /// leaves the cluster; a `Lagged` error is an item, and the stream goes
    /// on after it.
    pub fn into_stream(self) -> impl futures::Stream<Item = Result<ClusterEvent, EventsError>> + Send + Unpin {
        Box::pin(futures::stream::unfold(self, |mut s| async move {
            match s.recv().await {
                Err(EventsError::Closed) => None,
                next => Some((next, s)),
            }
        }))
    }

    /// The next event.
    pub async fn recv(&mut self) -> Result<ClusterEvent, EventsError> {
        if let Some(e) = self.initial.pop_front() {
            return Ok(e);
        }
        use tokio::sync::broadcast::error::RecvError;
        match self.rx.recv().await {
            Ok(e) => Ok(e),
            Err(RecvError::Lagged(n)) => Err(EventsError::Lagged(n)),
            Err(RecvError::Closed) => Err(EventsError::Closed),
        }
    }
}
