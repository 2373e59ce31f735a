//! Message tags: what two nodes compare to agree that an actor takes the
//! messages a ref was made for (see [`message_tag`]).
//!
//! A tag is built from `std::any::type_name` with the module paths taken
//! out, and from what the type's `Deserialize` asks a probe for: serde's
//! name for the container and its field or variant names. The probe is a
//! `Deserializer` that never yields a value, so no input is needed and any
//! `RemoteMessage` can be tagged without a change to the blanket impl.

use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};

use serde::de::{self, Deserializer, Visitor};

use super::mailbox::RemoteMessage;

/// Longest field or variant list written out in a tag, in bytes; a longer
/// one is replaced by its hash, so a tag stays short enough to read in an
/// error message and to send with every `Open`.
const MAX_SHAPE: usize = 200;

/// The tag of message type `M`: what two nodes compare to agree that an
/// actor takes the messages a ref was made for.
///
/// [`Node::lookup`](crate::Node::lookup), and every route opened to an
/// actor (also for a ref received inside a message), send the tag of the
/// message type asked for; the actor's node compares it with the tag of the
/// type the actor was exported with, and refuses a different one with
/// [`RemoteError::TypeMismatch`](crate::RemoteError::TypeMismatch), which
/// names both tags. So two programs need not share the Rust type, only its
/// tag, which is made of:
///
/// 1. **The type's name without its module paths**, generics kept:
///    `my_app::msgs::Ping` is `Ping`, `alloc::vec::Vec<a::Job<u64>>` is
///    `Vec<Job<u64>>`. A type can move between modules and crates.
/// 2. **Its serde name, if the author renamed it**: with
///    `#[serde(rename = "app.Ping")]`, `struct Ping` is `app.Ping` (a
///    generic `Job<u64>` becomes `app.Job<u64>`). Two Rust types of
///    different names with the same serde name match. A wrapper whose
///    `Deserialize` is that of a type in its generics (`Box<Ping>`,
///    `Mutex<Ping>`) keeps its own name.
/// 3. **The names of its fields or variants**, in order, as serde reads
///    them (after `rename_all`, without skipped ones): `Ping{a,b}` for a
///    struct, `Msg{Inc|Get|Stop}` for an enum. If that list is longer than
///    200 bytes it is replaced by a 64-bit FNV-1a hash of it, in hex:
///    `Msg#1f2e3d4c5b6a7988`.
///
/// The fingerprint covers the names at the top level only: not the types
/// of the fields, not the fields of a variant, and not the fields of a
/// generic argument (`tether_actix`'s `Envelope<Ping>`, a newtype struct, is
/// `Envelope<Ping>` whatever `Ping`'s fields), unless the type deserializes
/// as that argument (`Box<Ping>` is `Box<Ping>{a,b}`). A type serde does
/// not read as a named struct or enum (a primitive, tuple, collection,
/// untagged or internally tagged enum, or a struct with a flattened field)
/// is tagged by its name alone; unit, newtype and tuple structs have a name
/// but no field names.
///
/// To choose a tag: define the message type in a crate both programs use,
/// or identically (same name, same fields or variants in the same order)
/// in each; pin its name with `#[serde(rename = "...")]` where the Rust
/// names differ or may change.
///
/// The field names are learnt by calling `M`'s `Deserialize` on a probe
/// that gives it no input. A hand-written `Deserialize` that panics there
/// is caught (the panic hook still reports it) and `M` is tagged by its
/// name alone; in a build with `panic = "abort"` it aborts.
///
/// ```
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// enum Msg {
///     Inc(u64),
///     Get,
///     Stop,
/// }
///
/// #[derive(Serialize, Deserialize)]
/// #[serde(rename = "app.Job")]
/// struct Job<T> {
///     id: u64,
///     payload: T,
/// }
///
/// assert_eq!(tether::message_tag::<Msg>(), "Msg{Inc|Get|Stop}");
/// assert_eq!(tether::message_tag::<Job<String>>(), "app.Job<String>{id,payload}");
/// assert_eq!(tether::message_tag::<Vec<u64>>(), "Vec<u64>");
/// ```
pub fn message_tag<M: RemoteMessage>() -> String {
    tag::<M>()
}

/// The tag of `M` (see [`message_tag`]).
pub(crate) fn tag<M: RemoteMessage>() -> String {
    render(strip_paths(std::any::type_name::<M>()), probe::<M>())
}

/// The tag of `M`, rendered once per type in this process and shared: an
/// export keeps one for each type it takes, and 100,000 exports of one
/// type need not hold 100,000 copies. (At most one entry per message type
/// the program uses.)
pub(crate) fn shared_tag<M: RemoteMessage>() -> std::sync::Arc<str> {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex, OnceLock};
    static TAGS: OnceLock<Mutex<HashMap<std::any::TypeId, Arc<str>>>> = OnceLock::new();
    let tags = TAGS.get_or_init(Default::default);
    if let Some(t) = tags.lock().unwrap_or_else(|e| e.into_inner()).get(&std::any::TypeId::of::<M>()) {
        return t.clone();
    }
    // Rendered without the lock: it probes the type's serde shape.
    let rendered: Arc<str> = tag::<M>().into();
    let mut tags = tags.lock().unwrap_or_else(|e| e.into_inner());
    tags.entry(std::any::TypeId::of::<M>()).or_insert(rendered).clone()
}

/// `type_name` without module paths: every `a::b::C` becomes `C`, wherever
/// it stands (generic arguments, tuples, arrays, references, `dyn`).
fn strip_paths(full: &str) -> String {
    let bytes = full.as_bytes();
    let mut out = String::with_capacity(full.len());
    // `full[copied..i]` is still to be copied; `out[path_start..]` is the
    // path being read, which a `::` drops (it was a module's name). Every
    // index cut at is that of an ASCII byte, so a char boundary.
    let (mut copied, mut path_start, mut i) = (0, 0, 0);
    while i < bytes.len() {
        if bytes[i] == b':' && bytes.get(i + 1) == Some(&b':') {
            out.push_str(&full[copied..i]);
            out.truncate(path_start);
            i += 2;
            copied = i;
        } else {
            if bytes[i].is_ascii() && !is_ident(char::from(bytes[i])) {
                out.push_str(&full[copied..=i]);
                copied = i + 1;
                path_start = out.len();
            }
            i += 1;
        }
    }
    out.push_str(&full[copied..]);
    out
}

/// Whether `c` can be part of a Rust identifier (`#` for raw ones).
fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || c == '#'
}

/// What a type's `Deserialize` asked the probe for first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Seen {
    /// Nothing with a name: a primitive, sequence or map, `any` (untagged
    /// and internally tagged enums, flattened structs), no call at all, or a
    /// panic.
    Nothing,
    /// A unit, newtype or tuple struct: a serde name, no field names.
    Named(&'static str),
    /// A struct: its serde name and field names.
    Struct(&'static str, &'static [&'static str]),
    /// An enum: its serde name and variant names.
    Enum(&'static str, &'static [&'static str]),
}

/// Asks `M`'s `Deserialize` what it would read.
fn probe<M: RemoteMessage>() -> Seen {
    let mut seen = Seen::Nothing;
    // Whatever a panicking impl left half done is thrown away with `seen`.
    let probed = catch_unwind(AssertUnwindSafe(|| {
        // An impl that makes a value without reading (`Ok` here) tells
        // nothing either; the value is dropped.
        let _ = M::deserialize(Probe(&mut seen));
    }));
    match probed {
        Ok(()) => seen,
        Err(_) => Seen::Nothing,
    }
}

/// `rust` (a stripped type name) with the serde name, if renamed, and the
/// field or variant names of `seen`.
fn render(mut tag: String, seen: Seen) -> String {
    let (name, names, sep) = match seen {
        Seen::Nothing => return tag,
        Seen::Named(name) => (name, None, ','),
        Seen::Struct(name, fields) => (name, Some(fields), ','),
        Seen::Enum(name, variants) => (name, Some(variants), '|'),
    };
    let head = tag.find(|c| !is_ident(c)).unwrap_or(tag.len());
    // A serde name that is no identifier of the Rust name was chosen by the
    // author. One that names a generic argument belongs to a wrapper that
    // deserializes as its argument (`Box<Ping>` asks for `Ping`).
    if !tag.split(|c| !is_ident(c)).any(|ident| ident == name) {
        tag.replace_range(..head, name);
    }
    let Some(names) = names else { return tag };
    let start = tag.len();
    tag.push('{');
    for (i, n) in names.iter().enumerate() {
        if i > 0 {
            tag.push(sep);
        }
        tag.push_str(n);
    }
    tag.push('}');
    if tag.len() - start > MAX_SHAPE {
        let hash = fnv1a(&tag.as_bytes()[start..]);
        tag.truncate(start);
        tag.push_str(&format!("#{hash:016x}"));
    }
    tag
}

/// 64-bit FNV-1a: the same on every build and platform, unlike std's
/// `DefaultHasher`, which is not specified.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3))
}

/// A `Deserializer` that records the first request made of it in its
/// `Seen` and fails it, so no value is ever produced.
struct Probe<'a>(&'a mut Seen);

/// The probe's only answer.
#[derive(Debug)]
struct Probed;

impl fmt::Display for Probed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("probed for a message tag")
    }
}

impl std::error::Error for Probed {}

impl de::Error for Probed {
    fn custom<T: fmt::Display>(_: T) -> Self {
        Probed
    }
}

impl<'de> Deserializer<'de> for Probe<'_> {
    type Error = Probed;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Probed> {
        Err(Probed)
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(self, name: &'static str, _: V) -> Result<V::Value, Probed> {
        *self.0 = Seen::Named(name);
        Err(Probed)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(self, name: &'static str, _: V) -> Result<V::Value, Probed> {
        *self.0 = Seen::Named(name);
        Err(Probed)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(self, name: &'static str, _: usize, _: V) -> Result<V::Value, Probed> {
        *self.0 = Seen::Named(name);
        Err(Probed)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Probed> {
        *self.0 = Seen::Struct(name, fields);
        Err(Probed)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Probed> {
        *self.0 = Seen::Enum(name, variants);
        Err(Probed)
    }

    /// Like tether's codecs, so that types whose form depends on it
    /// (`SocketAddr`, `Uuid`) are probed as they travel.
    fn is_human_readable(&self) -> bool {
        false
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit seq tuple map identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use serde::{Deserialize, Serialize};

    use super::*;

    mod a {
        #[derive(serde::Serialize, serde::Deserialize)]
        pub(super) struct B;
    }

    #[derive(Serialize, Deserialize)]
    struct Ping {
        a: u64,
        b: String,
    }

    #[derive(Serialize, Deserialize)]
    enum Msg {
        Inc(u64),
        Get { reply: u64 },
        Stop,
    }

    #[derive(Serialize, Deserialize)]
    struct Unit;

    #[derive(Serialize, Deserialize)]
    struct Newtype(u64);

    #[derive(Serialize, Deserialize)]
    struct Pair(u64, u64);

    #[test]
    fn module_paths_are_stripped_and_generics_kept() {
        for (full, stripped) in [
            ("my_app::msgs::Ping", "Ping"),
            ("tether_actix::envelope::Envelope<app::Ping>", "Envelope<Ping>"),
            ("alloc::vec::Vec<core::option::Option<a::B>>", "Vec<Option<B>>"),
            ("(u8, alloc::string::String, x::y::Z<u64>)", "(u8, String, Z<u64>)"),
            ("[u8; 4]", "[u8; 4]"),
            ("[a::B; 4]", "[B; 4]"),
            ("&[a::B]", "&[B]"),
            ("&mut a::b::C<d::E, 3>", "&mut C<E, 3>"),
            ("alloc::boxed::Box<dyn core::any::Any + core::marker::Send>", "Box<dyn Any + Send>"),
            ("fn(a::B) -> c::D", "fn(B) -> D"),
            ("std::collections::hash::map::HashMap<k::K, v::V>", "HashMap<K, V>"),
            ("u64", "u64"),
            ("a::b::Ünï<c::Ðé, x::y::Z>", "Ünï<Ðé, Z>"),
        ] {
            assert_eq!(strip_paths(full), stripped, "{full}");
        }
    }

    #[test]
    fn real_types_are_tagged_by_their_stripped_names() {
        assert_eq!(tag::<u64>(), "u64");
        assert_eq!(tag::<String>(), "String");
        assert_eq!(tag::<Vec<Option<a::B>>>(), "Vec<Option<B>>");
        assert_eq!(tag::<(u8, String)>(), "(u8, String)");
        assert_eq!(tag::<[u8; 4]>(), "[u8; 4]");
        assert_eq!(tag::<HashMap<String, a::B>>(), "HashMap<String, B>");
        assert_eq!(tag::<Option<Ping>>(), "Option<Ping>", "only the top level is probed");
    }

    #[test]
    fn structs_and_enums_add_their_field_and_variant_names() {
        assert_eq!(tag::<Ping>(), "Ping{a,b}");
        assert_eq!(tag::<Msg>(), "Msg{Inc|Get|Stop}");
        assert_eq!(tag::<Unit>(), "Unit");
        assert_eq!(tag::<Newtype>(), "Newtype");
        assert_eq!(tag::<Pair>(), "Pair");
        assert_eq!(tag::<a::B>(), "B");
        // Serde's own names: after `rename_all`, without skipped fields.
        #[derive(Serialize, Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Job {
            job_id: u64,
            #[serde(skip)]
            _cache: u64,
        }
        assert_eq!(tag::<Job>(), "Job{jobId}");
        // Order counts: postcard encodes fields and variants by position.
        mod other {
            #[derive(serde::Serialize, serde::Deserialize)]
            pub(super) struct Ping {
                b: String,
                a: u64,
            }
        }
        assert_eq!(tag::<other::Ping>(), "Ping{b,a}");
    }

    #[test]
    fn a_serde_rename_replaces_the_name_and_keeps_generics() {
        #[derive(Serialize, Deserialize)]
        #[serde(rename = "app.Ping")]
        struct Ping;
        #[derive(Serialize, Deserialize)]
        #[serde(rename = "app.Job")]
        struct Job<T>(T);
        #[derive(Serialize, Deserialize)]
        #[serde(rename = "app.Task")]
        struct Task<T> {
            id: u64,
            body: T,
        }
        #[derive(Serialize, Deserialize)]
        #[serde(rename = "app.Cmd")]
        enum Cmd {
            Go,
        }
        assert_eq!(tag::<Ping>(), "app.Ping");
        assert_eq!(tag::<Job<u64>>(), "app.Job<u64>");
        assert_eq!(tag::<Task<a::B>>(), "app.Task<B>{id,body}");
        assert_eq!(tag::<Cmd>(), "app.Cmd{Go}");
    }

    #[test]
    fn a_wrapper_that_deserializes_as_its_argument_keeps_its_name() {
        assert_eq!(tag::<Box<Ping>>(), "Box<Ping>{a,b}");
        assert_eq!(tag::<std::sync::Mutex<Msg>>(), "Mutex<Msg>{Inc|Get|Stop}");
    }

    #[test]
    fn types_serde_reads_without_a_name_are_tagged_by_name_alone() {
        #[derive(Serialize, Deserialize)]
        #[serde(untagged)]
        enum Either {
            Num(u64),
            Text(String),
        }
        #[derive(Serialize, Deserialize)]
        #[serde(tag = "type")]
        enum Internal {
            A { x: u64 },
        }
        assert_eq!(tag::<Either>(), "Either");
        assert_eq!(tag::<Internal>(), "Internal");
    }

    #[test]
    fn a_long_shape_is_hashed() {
        #[derive(Serialize, Deserialize)]
        enum Long {
            RegisterANewCustomerAccountNow,
            ChargeTheCustomerForTheOrder,
            RefundTheCustomerForTheOrder,
            ShipTheOrderToTheCustomerSoon,
            CancelTheOrderBeforeShipping,
            CloseTheCustomerAccountForever,
            ArchiveEverythingAboutTheOrder,
        }
        let shape = "{RegisterANewCustomerAccountNow|ChargeTheCustomerForTheOrder|\
                     RefundTheCustomerForTheOrder|ShipTheOrderToTheCustomerSoon|\
                     CancelTheOrderBeforeShipping|CloseTheCustomerAccountForever|\
                     ArchiveEverythingAboutTheOrder}";
        assert!(shape.len() > MAX_SHAPE);
        let tag = tag::<Long>();
        assert_eq!(tag, format!("Long#{:016x}", fnv1a(shape.as_bytes())));
        // The same on every build and platform: a fixed value.
        assert_eq!(tag, "Long#0399c8e6759121b4");
        // At the limit the names are written out; one byte more, hashed.
        let at_limit: &'static str = "x".repeat(MAX_SHAPE - 2).leak();
        let tag = render("Fits".into(), Seen::Struct("Fits", vec![at_limit].leak()));
        assert_eq!(tag, format!("Fits{{{at_limit}}}"));
        let over: &'static str = "x".repeat(MAX_SHAPE - 1).leak();
        let tag = render("Over".into(), Seen::Struct("Over", vec![over].leak()));
        assert_eq!(tag, format!("Over#{:016x}", fnv1a(format!("{{{over}}}").as_bytes())));
    }

    #[test]
    fn fnv1a_is_the_published_function() {
        // Test vectors of the FNV reference (draft-eastlake-fnv).
        assert_eq!(fnv1a(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a(b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x85944171f73967e8);
    }

    #[test]
    fn a_deserialize_that_panics_leaves_the_name_alone() {
        struct Grumpy;
        impl Serialize for Grumpy {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_unit()
            }
        }
        impl<'de> Deserialize<'de> for Grumpy {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                // Records a shape, then panics: the shape must not be used.
                let _ = d.deserialize_struct("Grumpy", &["a"], serde::de::IgnoredAny);
                panic!("no probing, please");
            }
        }
        assert_eq!(tag::<Grumpy>(), "Grumpy");
    }
}
