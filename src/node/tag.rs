//! Message tags (placeholder until the tags branch lands).

use super::mailbox::RemoteMessage;

/// The tag of `M` checked at lookup and when a route opens.
pub(crate) fn tag<M: RemoteMessage>() -> String {
    std::any::type_name::<M>().to_owned()
}
