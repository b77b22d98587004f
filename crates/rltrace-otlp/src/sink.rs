//! A request's spans handed on one at a time, with the resource and scope each belongs to.
//!
//! The decoders call a [`Sink`] as they read a body instead of building the whole request, so a
//! large body can be converted and stored a part at a time (see `decode_in_parts`): the calls come
//! in body order, `resource` before the `scope`s of that resource, `scope` before its spans.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

/// Receives a request's contents in order.
pub(crate) trait Sink {
    /// A `ResourceSpans` begins.
    fn resource(&mut self, resource: Option<Resource>);
    /// A `ScopeSpans` of the current resource begins.
    fn scope(&mut self, scope: Option<InstrumentationScope>);
    /// A span of the current scope; `false` stops the decoding.
    fn span(&mut self, span: Span) -> bool;
    /// The current `ScopeSpans` ends.
    fn end_scope(&mut self, _schema_url: String) {}
    /// The current `ResourceSpans` ends.
    fn end_resource(&mut self, _schema_url: String) {}
}

/// Builds the whole request back (whole-request decoding, and the spans a body places before the
/// resource or scope they belong to, which must wait for it).
#[derive(Default)]
pub(crate) struct Rebuild {
    pub(crate) request: ExportTraceServiceRequest,
}

impl Sink for Rebuild {
    fn resource(&mut self, resource: Option<Resource>) {
        self.request.resource_spans.push(ResourceSpans { resource, ..ResourceSpans::default() });
    }

    fn scope(&mut self, scope: Option<InstrumentationScope>) {
        if let Some(rs) = self.request.resource_spans.last_mut() {
            rs.scope_spans.push(ScopeSpans { scope, ..ScopeSpans::default() });
        }
    }

    fn span(&mut self, span: Span) -> bool {
        if let Some(ss) = self.request.resource_spans.last_mut().and_then(|rs| rs.scope_spans.last_mut()) {
            ss.spans.push(span);
        }
        true
    }

    fn end_scope(&mut self, schema_url: String) {
        if let Some(ss) = self.request.resource_spans.last_mut().and_then(|rs| rs.scope_spans.last_mut()) {
            ss.schema_url = schema_url;
            // Growth by doubling leaves up to half a list unused: give it back.
            ss.spans.shrink_to_fit();
        }
    }

    fn end_resource(&mut self, schema_url: String) {
        if let Some(rs) = self.request.resource_spans.last_mut() {
            rs.schema_url = schema_url;
            rs.scope_spans.shrink_to_fit();
        }
    }
}

/// Checks a body without keeping anything.
pub(crate) struct Discard;

impl Sink for Discard {
    fn resource(&mut self, _: Option<Resource>) {}
    fn scope(&mut self, _: Option<InstrumentationScope>) {}
    fn span(&mut self, _: Span) -> bool {
        true
    }
}

/// Hand a decoded request to `sink`, moving each span out as it goes; `false` if the sink stopped.
pub(crate) fn feed(request: ExportTraceServiceRequest, sink: &mut dyn Sink) -> bool {
    for rs in request.resource_spans {
        sink.resource(rs.resource);
        if !feed_scopes(rs.scope_spans, sink) {
            return false;
        }
        sink.end_resource(rs.schema_url);
    }
    true
}

/// Hand the `ScopeSpans` of the current resource to `sink`; `false` if it stopped.
pub(crate) fn feed_scopes(scopes: Vec<ScopeSpans>, sink: &mut dyn Sink) -> bool {
    for ss in scopes {
        sink.scope(ss.scope);
        for span in ss.spans {
            if !sink.span(span) {
                return false;
            }
        }
        sink.end_scope(ss.schema_url);
    }
    true
}
