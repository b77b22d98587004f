//! The REST bodies of the reward ledger and the callbacks (rewards, HITL, tests, defects) and the
//! what-if request: any bytes are answered with a value or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(body) = serde_json::from_slice::<serde_json::Value>(data) else { return };
    let policy = rltrace_core::Policy::default();
    let key = || Some("fuzz-key".to_string());
    let _ = rltrace_server::api::parse_reward(&body, key());
    let _ = rltrace_server::callbacks::parse_hitl(&body, None, &policy);
    let _ = rltrace_server::callbacks::parse_tests(&body, key());
    let _ = rltrace_server::callbacks::parse_defect(&body, None, &policy);
    let _ = rltrace_server::whatif::parse_request(&body);
    let _ = rltrace_server::whatif::parse_policy(&body);
});
