//! End to end with the Rust SDK over OTLP/gRPC (its own process: the SDK installs once per
//! process): `#[rl_triplet]` spans exported by the SDK's gRPC exporter reach a real
//! `rltrace serve` and read back as one sequence.

mod common;

use common::{Server, get_json, wait_until};
use rltrace_sdk::{Protocol, rl_triplet};
use serde_json::Value;

#[rl_triplet(role = "Test", task_id = task, name = "grpc.step")]
async fn step(task: &str, n: u32) -> u32 {
    tokio::task::yield_now().await;
    n * 2
}

#[test]
fn sdk_exports_over_grpc() {
    let server = Server::start(&[]);
    // gRPC export needs a runtime: installing without one is a clear error.
    let err = rltrace_sdk::builder().ignore_env().protocol(Protocol::Grpc).endpoint(server.grpc.clone()).install().err();
    assert!(err.as_ref().is_some_and(|e| e.to_string().contains("needs a tokio runtime")), "{err:?}");

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let guard = rt
        .block_on(async { rltrace_sdk::builder().ignore_env().service_name("grpc-e2e").protocol(Protocol::Grpc).endpoint(server.grpc.clone()).install() })
        .expect("install");
    let out = rt.block_on(async { step("grpc-task", 1).await + step("grpc-task", 2).await });
    assert_eq!(out, 6);
    guard.shutdown().expect("flush and shut down");

    let url = server.url("/api/v1/sequences/grpc-task");
    let mut seq = Value::Null;
    assert!(wait_until(20, || {
        seq = get_json(&url).1;
        seq["triplet_count"] == 2
    }), "{seq:#}");
    let t = seq["triplets"].as_array().cloned().unwrap_or_default();
    for (i, x) in t.iter().enumerate() {
        assert_eq!(x["sequence_index"], i);
        assert_eq!(x["state"]["args"]["n"], i + 1);
        assert_eq!(x["action"]["output"], 2 * (i + 1));
        assert_eq!(x["reward_sources"]["local"], 1.0);
    }
}
