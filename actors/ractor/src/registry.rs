//! Names across a cluster, in the shape of ractor's `registry`: claim a
//! name for an `ActorRef` on one member, and [`where_is`] finds it from any.
//!
//! ractor names an actor when it is spawned, and `ractor::registry::where_is`
//! finds it on this node. Here a running actor's name is claimed across a
//! [`Cluster`] with [`register`], and [`where_is`] finds it from any member
//! as a [`RemoteActorRef`] (also an actor exported under the name with
//! [`export`](crate::export)):
//!
//! ```
//! # use std::time::Duration;
//! # use ractor::{Actor, ActorProcessingErr, ActorRef};
//! # use serde::{Deserialize, Serialize};
//! # use tether::cluster::{Cluster, ClusterConfig};
//! # use tether::{Config, Node, ReplyPort};
//! #[derive(Serialize, Deserialize)]
//! enum Ping {
//!     Ping(ReplyPort<String>),
//! }
//! # struct Ponger;
//! # impl Actor for Ponger {
//! #     type Msg = Ping;
//! #     type State = ();
//! #     type Arguments = ();
//! #     async fn pre_start(&self, _: ActorRef<Ping>, _: ()) -> Result<(), ActorProcessingErr> { Ok(()) }
//! #     async fn handle(&self, _: ActorRef<Ping>, Ping::Ping(reply): Ping, _: &mut ()) -> Result<(), ActorProcessingErr> {
//! #         let _ = reply.send("pong".into());
//! #         Ok(())
//! #     }
//! # }
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let node = Node::new(Some("one"), Config::default())?;
//! let addr = node.listen("127.0.0.1:0").await?;
//! let cluster = Cluster::join(&node, addr, ClusterConfig::default()).await?;
//!
//! let (ponger, _) = Actor::spawn(None, Ponger, ()).await?;
//! let (_, _claim) = tether_ractor::registry::register(&cluster, "ponger", ponger)?;
//!
//! // On this member or any other:
//! let found = tether_ractor::registry::where_is::<Ping>(&cluster, "ponger").await?;
//! let ponger = found.expect("registered above");
//! assert_eq!(ponger.ask(Ping::Ping, Duration::from_secs(5)).await?, "pong");
//! # Ok(()) }
//! ```

use ractor::ActorRef;
use tether::cluster::{Claim, Cluster, RegistryError};
use tether::{RemoteError, RemoteMessage};

use crate::export::export_once;
use crate::RemoteActorRef;

/// Claims `name` across the cluster for `actor`: from then on
/// [`where_is`] on any member finds it (once gossip has spread the claim),
/// until the actor stops, its node leaves, or [`unregister`].
///
/// The actor is exported on the cluster's node unless it already is (one
/// export per actor and message type, shared with [`pg`](crate::pg) and
/// [`export`](crate::export)/[`export_paced`](crate::export_paced)).
/// Returns its remote ref and the [`Claim`], which tells if a claim made
/// elsewhere at the same time won ([`Claim::lost`]). Call within a tokio
/// runtime (any ractor handler is).
///
/// # Errors
///
/// [`RegistryError::Taken`] if another actor holds the name, and the other
/// refusals of [`Cluster::register`].
pub fn register<M>(
    cluster: &Cluster,
    name: &str,
    actor: ActorRef<M>,
) -> Result<(RemoteActorRef<M>, Claim), RegistryError>
where
    M: ractor::Message + RemoteMessage,
{
    let remote = export_once(cluster.node(), &actor);
    let claim = cluster.register(name, &remote)?;
    Ok((remote.into(), claim))
}

/// Gives up this node's claim on `name`; false if it held none.
pub fn unregister(cluster: &Cluster, name: &str) -> bool {
    cluster.unregister(name)
}

/// The actor holding `name` on any member, like ractor's `where_is`:
/// `None` if no member (that this node knows of) holds it. See
/// [`Cluster::lookup`] for which one is found when several do.
///
/// # Errors
///
/// [`RemoteError::TypeMismatch`] if the actor takes another message type
/// than `M`, and what opening the route to it reports.
pub async fn where_is<M: RemoteMessage>(
    cluster: &Cluster,
    name: &str,
) -> Result<Option<RemoteActorRef<M>>, RemoteError> {
    match cluster.lookup::<M>(name).await {
        Ok(r) => Ok(Some(r.into())),
        Err(RemoteError::NotFound(_)) => Ok(None),
        Err(e) => Err(e),
    }
}
