//! Traces across nodes: the span that sends a message becomes the parent of
//! the span that handles it on the node that receives it.
//!
//! Off by default. A node that sets
//! [`Config::trace_propagation`](crate::Config::trace_propagation) sends,
//! with every message it encodes, the W3C trace context (`traceparent`: trace
//! id, span id, flags; 25 bytes) of the span current at the send, and when
//! a message that carries one reaches an exported actor, delivers it inside
//! a span `receive` (`otel.kind = "consumer"`) whose parent is that
//! context. Off, a send costs one branch and no byte.
//!
//! What knows the ids of the current span is a tracing backend, not
//! `tracing` itself; a [`Propagator`] bridges the two. With the feature
//! `opentelemetry`, [`TracePropagation::opentelemetry`] reads and sets them
//! through `tracing-opentelemetry`:
//!
//! ```
//! # #[cfg(feature = "opentelemetry")] {
//! use tether::trace::TracePropagation;
//!
//! let mut cfg = tether::Config::default();
//! cfg.trace_propagation = Some(TracePropagation::opentelemetry());
//! # }
//! ```
//!
//! How far the parent reaches into a handler depends on the framework:
//! - ractor (built with its `message_span_propogation` feature, as
//!   tether-ractor is) runs a handler inside the span current when the
//!   message was cast, here `receive`: the handler's spans are children of
//!   the sender's.
//! - a core [`Mailbox`](crate::Mailbox) runs `deliver` inside `receive`.
//! - actix runs a handler in its actor's task and carries no span there:
//!   `receive` covers the hand-over to the actor's mailbox, not the
//!   handler.
//!
//! A message queued by a send that did not wait (actix's `do_send`,
//! ractor's `cast`) carries the context current when it was posted.
//!
//! `receive` is an INFO span of target `tether::trace`: a filter that
//! disables it (`tether=warn`, say) cuts the link, since a disabled span
//! has no parent to set. Keep `tether::trace=info` enabled where traces
//! matter.

use std::fmt;
use std::sync::Arc;

pub use crate::wire::TraceContext;

/// Reads the trace context of the current span, and makes a span the child
/// of a received one: the bridge between `tracing` and a tracing backend.
pub trait Propagator: Send + Sync + 'static {
    /// The context of the span current on this thread, to send with a
    /// message; `None` if there is none (or it is not valid).
    fn current(&self) -> Option<TraceContext>;

    /// Makes `span`, just created, a child of `parent` (a span on another
    /// node).
    fn set_parent(&self, span: &tracing::Span, parent: &TraceContext);
}

/// The [`Propagator`] a node uses; see the [module docs](self).
#[derive(Clone)]
pub struct TracePropagation(pub(crate) Arc<dyn Propagator>);

impl TracePropagation {
    /// Propagates with `propagator`.
    pub fn new(propagator: impl Propagator) -> TracePropagation {
        TracePropagation(Arc::new(propagator))
    }

    /// Propagates OpenTelemetry span contexts, through the
    /// `tracing-opentelemetry` layer of the global subscriber.
    #[cfg(feature = "opentelemetry")]
    pub fn opentelemetry() -> TracePropagation {
        TracePropagation::new(OpenTelemetry)
    }

    /// The context to send with a message encoded now: the one it was
    /// posted under if an outbox is sending it ([`posted_under`]), else the
    /// current span's, if there is one.
    pub(crate) fn current(&self) -> Option<TraceContext> {
        POSTED.try_with(|posted| *posted).ok().or_else(|| self.0.current())
    }

    /// A span for delivering a message that came with `parent`, its child.
    pub(crate) fn receive_span(&self, parent: &TraceContext, actor: u64) -> tracing::Span {
        let span = tracing::info_span!("receive", otel.kind = "consumer", actor);
        self.0.set_parent(&span, parent);
        span
    }
}

tokio::task_local! {
    /// The context a queued post was made under, while its outbox sends it.
    static POSTED: TraceContext;
}

/// Runs `send` (an outbox sending a post) so that what it encodes carries
/// `posted`, the context current when the message was posted. Keeping the
/// context rather than the poster's span does not hold that span open for
/// as long as the message waits.
pub(crate) async fn posted_under<F: std::future::Future>(posted: TraceContext, send: F) -> F::Output {
    POSTED.scope(posted, send).await
}

impl fmt::Debug for TracePropagation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TracePropagation")
    }
}

impl fmt::Display for TraceContext {
    /// As W3C's `traceparent` header: `00-<trace id>-<span id>-<flags>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("00-")?;
        self.trace_id.iter().try_for_each(|b| write!(f, "{b:02x}"))?;
        f.write_str("-")?;
        self.span_id.iter().try_for_each(|b| write!(f, "{b:02x}"))?;
        write!(f, "-{:02x}", self.flags)
    }
}

/// OpenTelemetry contexts through `tracing-opentelemetry`.
#[cfg(feature = "opentelemetry")]
struct OpenTelemetry;

#[cfg(feature = "opentelemetry")]
impl Propagator for OpenTelemetry {
    fn current(&self) -> Option<TraceContext> {
        use opentelemetry::trace::TraceContextExt;
        use tracing_opentelemetry::OpenTelemetrySpanExt;
        let cx = tracing::Span::current().context();
        let span = cx.span();
        let sc = span.span_context();
        sc.is_valid().then(|| TraceContext {
            trace_id: sc.trace_id().to_bytes(),
            span_id: sc.span_id().to_bytes(),
            flags: sc.trace_flags().to_u8(),
        })
    }

    fn set_parent(&self, span: &tracing::Span, parent: &TraceContext) {
        use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
        use tracing_opentelemetry::OpenTelemetrySpanExt;
        let sc = SpanContext::new(
            TraceId::from_bytes(parent.trace_id),
            SpanId::from_bytes(parent.span_id),
            TraceFlags::new(parent.flags),
            true,
            TraceState::default(),
        );
        // An invalid context (all-zero ids) is ignored, as W3C says.
        if sc.is_valid() {
            let cx = opentelemetry::Context::new().with_remote_span_context(sc);
            if let Err(e) = span.set_parent(cx) {
                tracing::debug!(error = %e, "trace context not applied");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_context_displays_as_a_traceparent_header() {
        let cx = TraceContext { trace_id: [0xab; 16], span_id: [0x01; 8], flags: 1 };
        assert_eq!(cx.to_string(), format!("00-{}-{}-01", "ab".repeat(16), "01".repeat(8)));
    }

    #[test]
    fn an_all_zero_id_makes_a_context_invalid() {
        let cx = TraceContext { trace_id: [1; 16], span_id: [1; 8], flags: 0 };
        assert!(cx.is_valid());
        assert!(!TraceContext { trace_id: [0; 16], ..cx }.is_valid());
        assert!(!TraceContext { span_id: [0; 8], ..cx }.is_valid());
    }
}
