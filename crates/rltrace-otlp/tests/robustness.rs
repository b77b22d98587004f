//! Property tests: the OTLP decoders and the conversion to spans never panic on untrusted bytes,
//! and gzip inflation never exceeds its bound.

use proptest::prelude::*;
use rltrace_otlp::{decode_json, decode_protobuf, inflate_gzip, request_to_spans};

const VALID: &str = r#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"a"}}]},"scopeSpans":[{"scope":{"name":"s"},"spans":[{"traceId":"5B8EFFF798038103D269B633813FC60C","spanId":"EEE19B7EC3C1B174","name":"x","kind":"SPAN_KIND_SERVER","startTimeUnixNano":"1","endTimeUnixNano":2,"attributes":[{"key":"rl.state","value":{"stringValue":"{}"}},{"key":"n","value":{"intValue":"3"}},{"key":"l","value":{"arrayValue":{"values":[{"boolValue":true}]}}}],"status":{"code":"STATUS_CODE_ERROR"}}]}]}]}"#;

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn protobuf_decoding_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(req) = decode_protobuf(&bytes) {
            let _ = request_to_spans(req);
        }
    }

    #[test]
    fn json_decoding_never_panics_on_mutated_requests(pos in 0usize..VALID.len(), len in 0usize..8, junk in "[\\[\\]{}:,\"0-9a-zA-Z_ -]{0,8}") {
        let mut text = VALID.to_string();
        let end = (pos + len).min(text.len());
        if text.is_char_boundary(pos) && text.is_char_boundary(end) {
            text.replace_range(pos..end, &junk);
        }
        if let Ok(req) = decode_json(text.as_bytes()) {
            let _ = request_to_spans(req);
        }
    }

    #[test]
    fn inflation_is_bounded(bytes in proptest::collection::vec(any::<u8>(), 0..256), max in 0usize..4096) {
        if let Ok(out) = inflate_gzip(&bytes, max) {
            prop_assert!(out.len() <= max);
        }
    }
}

#[test]
fn the_valid_request_decodes() {
    let req = decode_json(VALID.as_bytes()).expect("valid");
    let spans = request_to_spans(req);
    assert_eq!(spans.spans.len(), 1);
    assert!(spans.rejected.is_empty());
}
