//! The reward policy file (TOML, with the paths of bad fields) and its JSON form: any text is a
//! policy or an error, and a policy written back as TOML reads back as the same policy.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rltrace_core::Policy;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(p) = Policy::from_toml_with_paths(text) {
        let text = p.to_toml().expect("a policy read from TOML is written as TOML");
        let again = Policy::from_toml(&text).expect("a policy written as TOML reads back");
        assert_eq!(again.hash(), p.hash(), "the policy read back is the same policy");
    }
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(text) {
        let _ = Policy::from_json_value(&v);
    }
});
