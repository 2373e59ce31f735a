//! The one route of a [`RemoteActor`](crate::RemoteActor): a message of any
//! of the actor's types, tagged with its type, so that every message from a
//! node to the actor keeps its order, whatever its type, as it does through
//! a local `Addr`.
//!
//! On the wire an [`AnyMsg`] is a tuple struct of the message's
//! [tag](tether::message_tag) and the message (its `Envelope`) encoded as
//! usual. The receiving node decodes the message with the decoder that
//! [`ActorExport::handles`](crate::ActorExport::handles) registered for the
//! tag; an unknown tag fails to decode (logged, the message dropped, the
//! connection unharmed).

use std::any::{type_name, Any, TypeId};
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, OnceLock, RwLock};

use actix::dev::ToEnvelope;
use actix::{Actor, Handler, Message};
use futures::future::BoxFuture;
use serde::de::{DeserializeSeed, Error as _, SeqAccess, Visitor};
use serde::ser::{Error as _, SerializeTupleStruct};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tether::{ActorExit, Mailbox, RemoteMessage};

use crate::envelope::Envelope;
use crate::export::AddrMailbox;

/// The name both ends give the tuple struct (and so its tag's shape).
const NAME: &str = "AnyMsg";

/// A message of one of an actor's types, on the actor's one route.
pub(crate) struct AnyMsg {
    tag: Arc<str>,
    body: Body,
}

enum Body {
    /// To be sent: encoded through `erased_serde`.
    Out(Box<dyn Outgoing>),
    /// Received, or handed over on this node: the `Envelope<M>` itself.
    In(Box<dyn Any + Send>),
}

/// An envelope that can be encoded without its type, or handed over as it
/// is.
trait Outgoing: erased_serde::Serialize + Send {
    fn into_any(self: Box<Self>) -> Box<dyn Any + Send>;
}

impl<M> Outgoing for Envelope<M>
where
    M: Message + RemoteMessage,
    M::Result: RemoteMessage,
{
    fn into_any(self: Box<Self>) -> Box<dyn Any + Send> {
        self
    }
}

impl AnyMsg {
    /// `env` on the route, tagged with its type's tag.
    pub(crate) fn new<M>(env: Envelope<M>) -> AnyMsg
    where
        M: Message + RemoteMessage,
        M::Result: RemoteMessage,
    {
        AnyMsg { tag: tag_of::<M>(), body: Body::Out(Box::new(env)) }
    }

    /// The envelope inside, if it is one of `M` (always, for a message this
    /// node made with [`AnyMsg::new`]).
    pub(crate) fn into_envelope<M>(self) -> Option<Envelope<M>>
    where
        M: Message + RemoteMessage,
        M::Result: RemoteMessage,
    {
        self.into_any().downcast::<Envelope<M>>().ok().map(|e| *e)
    }

    fn into_any(self) -> Box<dyn Any + Send> {
        match self.body {
            Body::Out(out) => out.into_any(),
            Body::In(any) => any,
        }
    }
}

impl fmt::Debug for AnyMsg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AnyMsg({})", self.tag)
    }
}

/// The tag of [`AnyMsg`], made once.
pub(crate) fn any_tag() -> Arc<str> {
    static TAG: OnceLock<Arc<str>> = OnceLock::new();
    TAG.get_or_init(|| tether::message_tag::<AnyMsg>().into()).clone()
}

/// The tag of `Envelope<M>`, made once per type (making one probes the
/// type's serde shape).
pub(crate) fn tag_of<M>() -> Arc<str>
where
    M: Message + RemoteMessage,
    M::Result: RemoteMessage,
{
    static TAGS: OnceLock<RwLock<HashMap<std::any::TypeId, Arc<str>>>> = OnceLock::new();
    let tags = TAGS.get_or_init(Default::default);
    let id = std::any::TypeId::of::<M>();
    if let Some(tag) = tags.read().unwrap_or_else(|e| e.into_inner()).get(&id) {
        return tag.clone();
    }
    let tag: Arc<str> = tether::message_tag::<Envelope<M>>().into();
    tags.write().unwrap_or_else(|e| e.into_inner()).entry(id).or_insert(tag).clone()
}

impl Serialize for AnyMsg {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let Body::Out(out) = &self.body else {
            return Err(S::Error::custom("a received AnyMsg is not sent on"));
        };
        let mut t = s.serialize_tuple_struct(NAME, 2)?;
        t.serialize_field(&*self.tag)?;
        t.serialize_field(&**out as &dyn erased_serde::Serialize)?;
        t.end()
    }
}

/// Decodes the `Envelope` of one message type.
type Decoder = fn(&mut dyn erased_serde::Deserializer<'_>) -> Result<Box<dyn Any + Send>, erased_serde::Error>;

/// A type registered for a tag: which it is, its name, its decoder.
type Registered = (TypeId, &'static str, Decoder);

/// The decoders of the types actors of this process were exported for, by
/// tag; one per type, so as many as the program has message types.
fn decoders() -> &'static RwLock<HashMap<Arc<str>, Registered>> {
    static DECODERS: OnceLock<RwLock<HashMap<Arc<str>, Registered>>> = OnceLock::new();
    DECODERS.get_or_init(Default::default)
}

fn decode<M>(d: &mut dyn erased_serde::Deserializer<'_>) -> Result<Box<dyn Any + Send>, erased_serde::Error>
where
    M: Message + RemoteMessage,
    M::Result: RemoteMessage,
{
    erased_serde::deserialize::<Envelope<M>>(d).map(|e| Box::new(e) as Box<dyn Any + Send>)
}

/// Lets this process decode `M` on an actor's one route.
pub(crate) fn register<M>()
where
    M: Message + RemoteMessage,
    M::Result: RemoteMessage,
{
    let mut all = decoders().write().unwrap_or_else(|e| e.into_inner());
    let first = all.entry(tag_of::<M>()).or_insert((TypeId::of::<M>(), type_name::<M>(), decode::<M>));
    if first.0 != TypeId::of::<M>() {
        tracing::error!(
            tag = %tag_of::<M>(),
            first = first.1,
            second = type_name::<M>(),
            "two message types share one tag: messages with it decode as the first"
        );
    }
}

impl<'de> Deserialize<'de> for AnyMsg {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Fields;
        impl<'de> Visitor<'de> for Fields {
            type Value = AnyMsg;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a message tag and the message")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<AnyMsg, A::Error> {
                let tag: String = seq.next_element()?.ok_or_else(|| A::Error::invalid_length(0, &self))?;
                let decoder = decoders().read().unwrap_or_else(|e| e.into_inner()).get(tag.as_str()).map(|d| d.2);
                let Some(decoder) = decoder else {
                    return Err(A::Error::custom(format!("no actor here takes messages tagged {tag:?}")));
                };
                let body = seq.next_element_seed(Seed(decoder))?.ok_or_else(|| A::Error::invalid_length(1, &self))?;
                Ok(AnyMsg { tag: tag.into(), body: Body::In(body) })
            }
        }
        d.deserialize_tuple_struct(NAME, 2, Fields)
    }
}

struct Seed(Decoder);

impl<'de> DeserializeSeed<'de> for Seed {
    type Value = Box<dyn Any + Send>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        let mut d = <dyn erased_serde::Deserializer>::erase(d);
        (self.0)(&mut d).map_err(D::Error::custom)
    }
}

/// Hands one type's envelope, as `Any`, to the actor, tracked or not;
/// gives it back if the actor is gone.
type Deliver = Box<dyn Fn(Box<dyn Any + Send>, bool) -> Result<Tracked, Box<dyn Any + Send>> + Send + Sync>;

/// When a tracked message is done with (see [`Mailbox::deliver_tracked`]).
type Tracked = Option<BoxFuture<'static, ()>>;

/// An actix actor's mailbox for its one route: each message goes to the
/// mailbox of its type.
pub(crate) struct AnyMailbox {
    by_tag: HashMap<Arc<str>, Deliver>,
    /// The first type's mailbox: whether, when and how the actor stopped.
    state: Box<dyn ActorState>,
}

/// What every one of an actor's mailboxes knows of its life.
pub(crate) trait ActorState: Send + Sync + 'static {
    fn gone(&self) -> bool;
    fn stopped(&self) -> BoxFuture<'static, ()>;
    fn exit(&self) -> BoxFuture<'static, ActorExit>;
}

impl AnyMailbox {
    pub(crate) fn new(state: Box<dyn ActorState>) -> AnyMailbox {
        AnyMailbox { by_tag: HashMap::new(), state }
    }

    /// Adds the type `M`, handed to `mailbox`.
    pub(crate) fn add<A, M>(&mut self, mailbox: AddrMailbox<A, M>)
    where
        A: Actor + Handler<M>,
        A::Context: ToEnvelope<A, M>,
        M: Message + RemoteMessage,
        M::Result: RemoteMessage,
    {
        register::<M>();
        let deliver: Deliver = Box::new(move |any, tracked| {
            // The tag named `M`, so its decoder made an `Envelope<M>`, unless
            // another type has the same tag (`register` said so).
            let Ok(env) = any.downcast::<Envelope<M>>() else {
                tracing::warn!(tag = %tag_of::<M>(), "message decoded as another type with the same tag dropped");
                return Ok(None);
            };
            let env = *env;
            let back = |env: Envelope<M>| Box::new(env) as Box<dyn Any + Send>;
            if tracked {
                mailbox.deliver_tracked(env).map_err(back)
            } else {
                mailbox.deliver(env).map(|()| None).map_err(back)
            }
        });
        self.by_tag.entry(tag_of::<M>()).or_insert(deliver);
    }

    fn hand_over(&self, msg: AnyMsg, tracked: bool) -> Result<Tracked, AnyMsg> {
        let tag = msg.tag.clone();
        if self.state.gone() {
            return Err(msg);
        }
        let Some(deliver) = self.by_tag.get(&tag) else {
            // A lookup told the sender which types the actor takes; a
            // handle received in a message does not know.
            tracing::warn!(%tag, "message of a type the actor was not exported for dropped");
            return Ok(None);
        };
        deliver(msg.into_any(), tracked).map_err(|any| AnyMsg { tag, body: Body::In(any) })
    }
}

impl Mailbox<AnyMsg> for AnyMailbox {
    fn deliver(&self, msg: AnyMsg) -> Result<(), AnyMsg> {
        self.hand_over(msg, false).map(drop)
    }

    fn deliver_tracked(&self, msg: AnyMsg) -> Result<Tracked, AnyMsg> {
        self.hand_over(msg, true)
    }

    fn stopped(&self) -> BoxFuture<'static, ()> {
        self.state.stopped()
    }

    fn exit(&self) -> BoxFuture<'static, ActorExit> {
        self.state.exit()
    }
}

impl<M> crate::remote_addr::Carries<M> for AnyMsg
where
    M: Message + RemoteMessage,
    M::Result: RemoteMessage,
{
    fn wrap(env: Envelope<M>) -> Self {
        AnyMsg::new(env)
    }

    fn split(self) -> (M, Box<dyn std::any::Any + Send>) {
        // What comes back is what `wrap` made on this node (or its local
        // mailbox handed back), an `Envelope<M>`.
        self.into_envelope::<M>().expect("an AnyMsg comes back as the envelope it was made from").split_msg()
    }
}
