//! What an operator sees: the spans a connection and a route open, and the
//! levels their events are logged at. A layer records every event with the
//! fields of the spans around it; two nodes talk over real TCP.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::counter::{counter, Count};
use common::{within, TaskMailbox};
use futures::future::BoxFuture;
use tether::{Config, Node, RemoteRef};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::Instrument;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

const T: Duration = Duration::from_secs(20);

/// One event as recorded: its level, message, own fields, and the spans it
/// sat in (innermost first), each with its name and fields.
#[derive(Clone, Debug)]
struct Seen {
    level: Level,
    message: String,
    fields: BTreeMap<String, String>,
    spans: Vec<(String, BTreeMap<String, String>)>,
}

impl Seen {
    /// The fields of the innermost span named `name` around the event.
    fn span(&self, name: &str) -> Option<&BTreeMap<String, String>> {
        self.spans.iter().find(|(n, _)| n == name).map(|(_, f)| f)
    }
}

#[derive(Default)]
struct Fields(BTreeMap<String, String>);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<Seen>>>);

impl Recorder {
    fn take(&self) -> Vec<Seen> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Recorder {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        ctx.span(id).expect("new span").extensions_mut().insert(fields);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let span = ctx.span(id).expect("recorded span");
        let mut ext = span.extensions_mut();
        if let Some(fields) = ext.get_mut::<Fields>() {
            values.record(fields);
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let message = fields.0.remove("message").unwrap_or_default();
        let spans = ctx
            .event_scope(event)
            .map(|scope| {
                scope
                    .map(|s| {
                        let f = s.extensions().get::<Fields>().map(|f| f.0.clone()).unwrap_or_default();
                        (s.name().to_owned(), f)
                    })
                    .collect()
            })
            .unwrap_or_default();
        let seen = Seen { level: *event.metadata().level(), message, fields: fields.0, spans };
        self.0.lock().unwrap().push(seen);
    }
}

/// A mailbox that notes the span current when each message is handed over.
struct Noting<M>(TaskMailbox<M>, Arc<Mutex<BTreeSet<String>>>);

impl<M: Send + 'static> tether::Mailbox<M> for Noting<M> {
    fn deliver(&self, msg: M) -> Result<(), M> {
        let current = tracing::Span::current().metadata().map_or("none", |m| m.name());
        self.1.lock().unwrap().insert(current.to_owned());
        self.0.deliver(msg)
    }
    fn stopped(&self) -> BoxFuture<'static, ()> {
        self.0.stopped()
    }
}

/// A healthy session logs nothing at INFO or above, and at DEBUG explains
/// each connection decision inside the connection's span (peer id, then the
/// peer's name once it said hello, address, side); a route's events sit in
/// the route's span. Those spans are roots: a request that dials does not
/// become the parent of the connection (which would hold it open for the
/// connection's life), and a handler does not run inside its route's span.
#[test]
fn a_healthy_session_is_quiet_at_info_and_explained_at_debug() {
    let recorder = Recorder::default();
    let subscriber =
        tracing_subscriber::registry().with(recorder.clone().with_filter(tracing_subscriber::filter::filter_fn(|m| {
            (m.target().starts_with("tether") || m.target() == "observability") && *m.level() <= Level::DEBUG
        })));
    tracing::subscriber::set_global_default(subscriber).expect("the only subscriber of this test binary");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(within(T, async {
        let mut cfg = Config::default();
        cfg.ping_interval = Duration::from_millis(50);
        let a = Node::new(Some("alpha"), cfg.clone()).unwrap();
        let b = Node::new(Some("beta"), cfg).unwrap();
        let addr = b.listen("127.0.0.1:0").await.unwrap();
        let handed_over_in = Arc::new(Mutex::new(BTreeSet::new()));
        b.export(Some("counter"), Noting(counter(), handed_over_in.clone())).unwrap();
        let request = tracing::info_span!("request");
        let (b_id, r) = async {
            let b_id = a.connect(&addr.to_string()).await.unwrap();
            let r: RemoteRef<Count> = a.lookup(b_id, "counter").await.unwrap();
            (b_id, r)
        }
        .instrument(request)
        .await;
        for n in 0..100 {
            r.tell(Count::Num(n)).await.unwrap();
        }
        assert_eq!(r.ask(Count::Received, T).await.unwrap(), 100);
        // Pings go and come back meanwhile: still nothing to say.
        let conn = a.connection(b_id).unwrap();
        common::eventually("a ping was answered", T, || conn.stats().rtt.is_some()).await;
        let healthy = recorder.take();
        let loud: Vec<_> = healthy.iter().filter(|e| e.level <= Level::INFO).collect();
        assert!(loud.is_empty(), "a healthy session logged at INFO or above: {loud:#?}");

        let dial = healthy.iter().find(|e| e.message == "dialing").expect("the dial is explained");
        assert!(dial.span("request").is_some(), "dialing is the request's doing: {dial:#?}");
        let leaked: Vec<_> =
            healthy.iter().filter(|e| e.span("connection").is_some() && e.span("request").is_some()).collect();
        assert!(leaked.is_empty(), "the connection's span is a root: {leaked:#?}");
        assert_eq!(*handed_over_in.lock().unwrap(), BTreeSet::from(["none".to_owned()]), "handled outside any span");
        assert_eq!(dial.fields["addr"], addr.to_string());
        let established: Vec<_> = healthy.iter().filter(|e| e.message == "connection established").collect();
        assert_eq!(established.len(), 2, "one per side: {established:#?}");
        for e in &established {
            let conn = e.span("connection").expect("logged in the connection's span");
            assert!(conn.contains_key("addr") && conn["addr"] != "?", "the span names the address: {conn:?}");
        }
        let sides: Vec<_> = established.iter().map(|e| e.span("connection").unwrap()["side"].clone()).collect();
        assert!(sides.contains(&"dialed".to_owned()) && sides.contains(&"accepted".to_owned()), "{sides:?}");
        let on_a = established.iter().find(|e| e.span("connection").unwrap()["peer"] == b_id.to_string());
        assert!(on_a.is_some(), "alpha's span names beta's id: {established:#?}");
        // The tie-break is explained on both sides, in the span, and once a
        // hello was heard the span carries the peer's name.
        let tie: Vec<_> = healthy.iter().filter(|e| e.message.contains("(tie-break)")).collect();
        assert_eq!(tie.len(), 2, "{tie:#?}");
        let hellos: Vec<_> = healthy.iter().filter(|e| e.message == "peer said hello").collect();
        assert_eq!(hellos.len(), 2, "{hellos:#?}");
        for h in &hellos {
            let conn = h.span("connection").expect("hello heard in the connection's span");
            let name = h.fields["name"].clone();
            assert_eq!(conn.get("peer_name").map(|n| format!("Some({n:?})")), Some(name), "{h:#?}");
        }
        let route = healthy.iter().find(|e| e.message == "route opened").expect("the route is explained");
        let fields = route.span("route").expect("in the route's span");
        assert_eq!(fields["from"], a.id().to_string());
        assert!(fields["tag"].contains("Count"), "{fields:?}");

        // A peer that goes is news at INFO, in its connection's span.
        b.shutdown().await;
        // Awaited as the log line itself: it follows the peer table's change.
        common::eventually("alpha logs that beta went", T, || {
            recorder.0.lock().unwrap().iter().any(|e| e.message == "peer gone")
        })
        .await;
        assert!(a.peers().is_empty());
        let after = recorder.take();
        let gone = after.iter().find(|e| e.message == "peer gone").expect("a departure is logged");
        assert_eq!(gone.level, Level::INFO);
        assert_eq!(gone.span("connection").and_then(|c| c.get("peer_name")).map(String::as_str), Some("beta"));
        a.shutdown().await;
    }));
}
