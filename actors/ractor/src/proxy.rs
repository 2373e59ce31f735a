//! A local ractor actor that stands for a remote one, for code that takes
//! an `ActorRef<M>`: what
//! [`RemoteActorRef::to_actor_ref`](crate::RemoteActorRef::to_actor_ref)
//! spawns (its docs say what goes through and what cannot).

use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, SpawnErr};
use tether::{RemoteMessage, TellError};

use crate::RemoteActorRef;

/// The proxy actor.
struct Proxy<M> {
    remote: RemoteActorRef<M>,
}

/// The proxy's state: the task that waits for the remote actor to go,
/// aborted when the proxy ends however it ends (its state is dropped).
struct Watching(tokio::task::AbortHandle);

impl Drop for Watching {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl<M: RemoteMessage> Actor for Proxy<M> {
    type Msg = M;
    type State = Watching;
    type Arguments = ();

    async fn pre_start(&self, myself: ActorRef<M>, _: ()) -> Result<Watching, ActorProcessingErr> {
        let monitor = self.remote.monitor();
        let cell = myself.get_cell();
        let task = tokio::spawn(async move {
            let event = monitor.await;
            cell.stop(Some(format!("remote actor gone: {event:?}")));
        });
        Ok(Watching(task.abort_handle()))
    }

    async fn handle(&self, myself: ActorRef<M>, msg: M, _: &mut Watching) -> Result<(), ActorProcessingErr> {
        match self.remote.post(msg) {
            Ok(()) => {}
            // Counted and logged by the node.
            Err(TellError::Full(_)) => {}
            Err(TellError::Unreachable { error, .. }) => {
                myself.stop(Some(format!("remote actor unreachable: {error}")));
            }
            Err(e) => {
                tracing::warn!(actor = %self.remote.id(), error = %e, "proxy dropped a message it could not send");
            }
        }
        Ok(())
    }
}

/// Spawns a proxy for `remote`, linked to `supervisor` if given.
pub(crate) async fn spawn<M: RemoteMessage>(
    remote: RemoteActorRef<M>,
    supervisor: Option<ActorCell>,
) -> Result<ActorRef<M>, SpawnErr> {
    let proxy = Proxy { remote };
    let (actor, _handle) = match supervisor {
        Some(s) => Actor::spawn_linked(None, proxy, (), s).await?,
        None => Actor::spawn(None, proxy, ()).await?,
    };
    Ok(actor)
}
