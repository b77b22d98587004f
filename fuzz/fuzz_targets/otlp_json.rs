//! OTLP/JSON bodies: the whole decoder and the part-by-part walk must never panic, and
//! what they decode must convert and map to triplets without panicking either.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rltrace_otlp::{Encoding, decode_in_parts, decode_json, request_to_spans};

fuzz_target!(|data: &[u8]| {
    let limits = rltrace_core::Limits::default();
    if let Ok(req) = decode_json(data) {
        for span in request_to_spans(req).spans {
            let _ = rltrace_core::triplet::analyze(span, &limits);
        }
    }
    let mut parts = 0usize;
    let _ = decode_in_parts(Encoding::Json, data, 64, |p| {
        parts += p.spans.len();
        Ok::<(), ()>(())
    });
});
