//! End-to-end tests of the datasets (DESIGN section 7): every shape in both formats, from
//! `GET /api/v1/export` and `rltrace export`, read back by the readers trainers use (`pyarrow`
//! and Hugging Face `datasets`, through `tests/python/read_datasets.py`) and checked against
//! rewards computed by hand; manifests that rebuild the same file byte for byte after more
//! spans and rewards arrived; bad input answered 400 (or a failing command) with nothing
//! written; the memory bounds of DPO pairing and stepwise rows at their edge.
//!
//! Python: `RLTRACE_PYTHON` names a python with `crates/rltrace/tests/python/requirements.txt`
//! installed (`.ci/python-setup.sh`). Without it the reader tests fail in CI (`CI` set) and
//! print a notice elsewhere, as `tests/python_sdk.rs` does.

mod api_support;
mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use api_support::{BASE_NS, SEC, assert_error, get_text, pct, reward_created, send, span, span_id, trace_id, triplet};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const SHAPES: [&str; 7] = ["triplets", "agentlightning", "trl-sft", "trl-prompt-completion", "trl-kto", "trl-dpo", "trl-stepwise"];

fn python() -> Option<PathBuf> {
    match std::env::var_os("RLTRACE_PYTHON").filter(|v| !v.is_empty()) {
        Some(p) => Some(PathBuf::from(p)),
        None => {
            if std::env::var_os("CI").is_some() {
                panic!("RLTRACE_PYTHON must be set in CI (export RLTRACE_PYTHON=\"$(.ci/python-setup.sh)\")");
            }
            eprintln!("NOTICE: dataset reader tests skipped: RLTRACE_PYTHON is not set (they are required in CI).");
            None
        }
    }
}

/// Read dataset files with pyarrow and `datasets`; returns one report per file.
fn read_with_python(py: &Path, specs: &[Value]) -> Vec<Value> {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = dir.path().join("spec.json");
    let out = dir.path().join("out.json");
    std::fs::write(&spec, serde_json::to_vec(specs).expect("spec")).expect("write spec");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/read_datasets.py");
    let o = Command::new(py)
        .arg(&script)
        .arg(&spec)
        .arg(&out)
        .env("HF_DATASETS_OFFLINE", "1")
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_HOME", dir.path().join("hf"))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("run python");
    assert!(o.status.success(), "read_datasets.py failed:\n{}\n{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&std::fs::read(&out).expect("report")).expect("report is JSON")
}

/// The test data: a pipeline of three non-LLM triplets, two LLM calls sharing a prompt in one
/// conversation and a third in another, and a triplet without reward. Returns nothing; the
/// expected values below are computed by hand from these rewards.
fn fill(s: &common::Server) {
    send(s, &[
        triplet("S1", 0, "Plan", 0).attr("rl.triplet_id", json!("S1-0")).attr("rl.state.task_id", json!("T-1")).attr("rl.action.output", json!("plan")).attr("rl.reward", json!(0.3)),
        triplet("S1", 1, "Code", 1).attr("rl.triplet_id", json!("S1-1")).attr("rl.state.task_id", json!("T-1")).attr("rl.action.output", json!("code")),
        triplet("S1", 2, "Test", 2).attr("rl.triplet_id", json!("S1-2")).attr("rl.state.task_id", json!("T-1")).attr("rl.action.output", json!("tests")),
    ]);
    let chat = |id: &str, conv: &str, answer: &str, secs: u64| {
        span(&trace_id(), &span_id(), "chat gpt-x", BASE_NS + secs * SEC)
            .attr("gen_ai.operation.name", json!("chat"))
            .attr("gen_ai.request.model", json!("gpt-x"))
            .attr("gen_ai.request.temperature", json!(0.5))
            .attr("gen_ai.conversation.id", json!(conv))
            .attr("gen_ai.input.messages", json!(r#"[{"role":"user","content":"2+2?"}]"#))
            .attr("gen_ai.output.messages", json!(format!(r#"[{{"role":"assistant","content":"{answer}"}}]"#)))
            .attr("rl.triplet_id", json!(id))
    };
    send(s, &[
        chat("C1-a", "C1", "4", 10).attr("rl.state.prompt_token_ids", json!([17, 10, 17, 30])).attr("rl.action.response_token_ids", json!([19])),
        chat("C1-b", "C1", "5", 11),
    ]);
    send(s, &[chat("C2-a", "C2", "four", 20)]);
    send(s, &[triplet("U", 0, "Review", 30).attr("rl.triplet_id", json!("U-0")).attr("rl.state.task_id", json!("T-9")).attr("rl.action.output", json!("none"))]);
    reward_created(s, &json!({"target": {"sequence_id": "S1"}, "value": 0.9, "source": "hitl"}));
    reward_created(s, &json!({"target": {"triplet_id": "S1-2"}, "value": 0.1, "source": "tests"}));
    reward_created(s, &json!({"target": {"triplet_id": "C1-a"}, "value": 1.0, "source": "judge"}));
    reward_created(s, &json!({"target": {"triplet_id": "C1-b"}, "value": 0.2, "source": "judge"}));
    reward_created(s, &json!({"target": {"triplet_id": "C2-a"}, "value": 0.55, "source": "judge"}));
}

/// Effective rewards by hand: S1-0 mean(local 0.3, hitl 0.9); S1-1 hitl 0.9; S1-2 mean(hitl
/// 0.9, tests 0.1); the LLM calls their judge value; U-0 none.
fn rewards() -> Vec<(&'static str, Option<f64>)> {
    vec![("S1-0", Some(0.6)), ("S1-1", Some(0.9)), ("S1-2", Some(0.5)), ("C1-a", Some(1.0)), ("C1-b", Some(0.2)), ("C2-a", Some(0.55)), ("U-0", None)]
}

fn user(c: &str) -> Value {
    json!([{"role": "user", "content": c}])
}

fn assistant(c: &str) -> Value {
    json!([{"role": "assistant", "content": c}])
}

/// Prompt and completion by hand (section 7): an LLM call's messages; otherwise the state and
/// the action as compact JSON with sorted keys.
fn prompt_completion(id: &str) -> (Value, Value) {
    let (role, out, task) = match id {
        "S1-0" => ("Plan", "plan", "T-1"),
        "S1-1" => ("Code", "code", "T-1"),
        "S1-2" => ("Test", "tests", "T-1"),
        "U-0" => ("Review", "none", "T-9"),
        "C1-a" => return (user("2+2?"), assistant("4")),
        "C1-b" => return (user("2+2?"), assistant("5")),
        _ => return (user("2+2?"), assistant("four")),
    };
    (
        user(&format!(r#"{{"agent_role":"{role}","task_id":"{task}"}}"#)),
        assistant(&format!(r#"{{"output":"{out}","success":true}}"#)),
    )
}

fn text_of(messages: &Value) -> Value {
    json!(messages.as_array().map(|a| a.iter().filter_map(|m| m["content"].as_str()).collect::<Vec<_>>().join("\n")).unwrap_or_default())
}

/// The rows each shape must give under the default options (`threshold` 0.5, `margin` 0.1), or
/// with `text=true`, in export order.
fn expected(shape: &str, text: bool) -> Vec<Value> {
    let pc = |id: &str| {
        let (p, c) = prompt_completion(id);
        if text { (text_of(&p), text_of(&c)) } else { (p, c) }
    };
    let r = rewards();
    match shape {
        "trl-sft" => r
            .iter()
            .filter(|(_, w)| w.is_some_and(|w| w >= 0.5))
            .map(|(id, _)| {
                let (p, c) = prompt_completion(id);
                if text {
                    json!({"text": format!("{}{}", text_of(&p).as_str().unwrap_or_default(), text_of(&c).as_str().unwrap_or_default())})
                } else {
                    json!({"messages": [p[0].clone(), c[0].clone()]})
                }
            })
            .collect(),
        "trl-prompt-completion" => r.iter().map(|(id, w)| {
            let (p, c) = pc(id);
            json!({"prompt": p, "completion": c, "reward": w})
        }).collect(),
        "trl-kto" => r.iter().filter_map(|(id, w)| w.map(|w| {
            let (p, c) = pc(id);
            json!({"prompt": p, "completion": c, "label": w >= 0.5})
        })).collect(),
        "trl-dpo" => {
            // One prompt has several completions: C1-a (1.0) against C1-b (0.2).
            let (p, chosen) = pc("C1-a");
            let (_, rejected) = pc("C1-b");
            vec![json!({"prompt": p, "chosen": chosen, "rejected": rejected})]
        }
        "trl-stepwise" => vec![
            json!({"prompt": pc("S1-0").0, "completions": [pc("S1-0").1, pc("S1-1").1, pc("S1-2").1], "labels": [true, true, true]}),
            json!({"prompt": pc("C1-a").0, "completions": [pc("C1-a").1, pc("C1-b").1], "labels": [true, false]}),
            json!({"prompt": pc("C2-a").0, "completions": [pc("C2-a").1], "labels": [true]}),
        ],
        _ => panic!("no expected rows for {shape}"),
    }
}

/// Compare rows, numbers within 1e-9.
#[track_caller]
fn assert_rows(got: &[Value], want: &[Value], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: {} rows, want {}:\n{got:#?}", got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(close(g, w), "{what}: row {i}\n got {g}\nwant {w}");
    }
}

fn close(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => (x.as_f64().unwrap_or(f64::NAN) - y.as_f64().unwrap_or(f64::NAN)).abs() < 1e-9,
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(a, b)| close(a, b)),
        (Value::Object(x), Value::Object(y)) => x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| close(v, w))),
        _ => a == b,
    }
}

fn get_bytes(url: &str) -> (u16, String, Vec<u8>) {
    let resp = common::client().get(url).send().expect("GET");
    let status = resp.status().as_u16();
    let ct = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    (status, ct, resp.bytes().expect("body").to_vec())
}

fn lines(bytes: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(bytes).lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))).collect()
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect::<String>())
}

fn cli(dir: &Path, args: &[&str]) -> (bool, String) {
    let (ok, _, stderr) = common::run_cli(dir, args);
    (ok, stderr)
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir).map(|r| r.filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned())).collect()).unwrap_or_default();
    v.sort();
    v
}

/// Parquet columns holding JSON text, parsed, so rows compare with the JSONL rows.
fn parse_json_columns(rows: &[Value], cols: &[&str]) -> Vec<Value> {
    rows.iter()
        .map(|r| {
            let mut r = r.clone();
            for c in cols {
                if let Some(s) = r[*c].as_str() {
                    r[*c] = serde_json::from_str(s).unwrap_or_else(|e| panic!("column {c} is not JSON ({e}): {s}"));
                }
            }
            r
        })
        .collect()
}

/// Every shape in both formats over the API, read by pyarrow and `datasets` with the column
/// types TRL needs, every value against the rewards by hand; the CLI gives the same files.
#[test]
fn every_shape_and_format_is_read_by_pyarrow_and_datasets() {
    let Some(py) = python() else { return };
    let mut s = common::Server::start(&[]);
    fill(&s);
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut specs = Vec::new();
    let mut api_jsonl: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let variants: Vec<(&str, bool)> = SHAPES.iter().map(|s| (*s, false)).chain(["trl-sft", "trl-prompt-completion", "trl-kto", "trl-dpo", "trl-stepwise"].iter().map(|s| (*s, true))).collect();
    for (shape, text) in &variants {
        for format in ["jsonl", "parquet"] {
            let url = s.url(&format!("/api/v1/export?shape={shape}&format={format}{}", if *text { "&text=true" } else { "" }));
            let (status, ct, body) = get_bytes(&url);
            assert_eq!(status, 200, "{url}: {}", String::from_utf8_lossy(&body));
            let want_ct = if format == "jsonl" { "application/x-ndjson" } else { "application/vnd.apache.parquet" };
            assert_eq!(ct, want_ct, "{url}");
            let name = format!("{shape}{}.{format}", if *text { "-text" } else { "" });
            let path = tmp.path().join(&name);
            std::fs::write(&path, &body).expect("write");
            if format == "jsonl" {
                api_jsonl.insert(name.clone(), lines(&body));
            } else {
                assert_eq!(&body[..4], b"PAR1", "{url}: a Parquet file");
            }
            specs.push(json!({"path": path.to_string_lossy(), "shape": shape, "format": format, "text": text, "name": name}));
        }
    }
    let reports = read_with_python(&py, &specs);
    for (spec, rep) in specs.iter().zip(&reports) {
        let (shape, format, text) = (spec["shape"].as_str().unwrap_or_default(), spec["format"].as_str().unwrap_or_default(), spec["text"] == true);
        let name = spec["name"].as_str().unwrap_or_default();
        let rows = rep["rows"].as_array().cloned().unwrap_or_default();
        let pa_rows = rep["pyarrow_rows"].as_array().cloned().unwrap_or_default();
        assert_eq!(rows.len(), pa_rows.len(), "{name}");
        if format == "parquet" {
            assert_eq!(rep["compression"], json!(["ZSTD"]), "{name}: zstd");
            assert_eq!(rep["row_groups"], 1, "{name}");
        }
        match shape {
            "triplets" => {
                let rows = if format == "parquet" {
                    let want_json: Vec<&str> = vec!["state", "action", "reward_sources"];
                    assert_eq!(rep["json_columns"], json!(want_json), "{name}: JSON logical type");
                    parse_json_columns(&rows, &want_json)
                } else {
                    rows
                };
                let got: Vec<(String, Value)> = rows.iter().map(|r| (r["triplet_id"].as_str().unwrap_or_default().to_string(), r["reward"].clone())).collect();
                let want = rewards();
                assert_eq!(got.iter().map(|(i, _)| i.as_str()).collect::<Vec<_>>(), want.iter().map(|(i, _)| *i).collect::<Vec<_>>(), "{name}: export order");
                for ((id, g), (_, w)) in got.iter().zip(&want) {
                    assert!(close(g, &json!(w)), "{name}: {id} reward {g}, want {w:?}");
                }
                let s10 = &rows[0];
                assert_eq!(s10["state"]["task_id"], "T-1", "{name}");
                assert!(close(&s10["reward_sources"]["local"], &json!(0.3)) && close(&s10["reward_sources"]["hitl"], &json!(0.9)), "{name}: {s10}");
                if format == "parquet" {
                    // Times are UTC timestamps: datasets gives a datetime, written with an offset.
                    assert_eq!(s10["timestamp_utc"], "2023-11-14T22:13:20+00:00", "{name}: {s10}");
                } else {
                    assert_eq!(s10["timestamp_utc"], "2023-11-14T22:13:20.000000Z", "{name}: {s10}");
                }
                assert!(rows[6]["reward"].is_null() && rows[6]["reward_assigned_at"].is_null(), "{name}");
            }
            "agentlightning" => {
                let rows = if format == "parquet" { parse_json_columns(&rows, &["prompt", "response", "metadata"]) } else { rows };
                assert_eq!(rows.len(), 7, "{name}");
                for (row, (id, w)) in rows.iter().zip(rewards()) {
                    assert_eq!(row["metadata"]["triplet_id"], id, "{name}");
                    assert!(close(&row["reward"], &json!(w)), "{name}: {id}");
                    let (p, c) = prompt_completion(id);
                    assert_eq!(row["prompt"]["raw_content"], p, "{name}: {id}");
                    assert_eq!(row["response"]["raw_content"], c, "{name}: {id}");
                }
                let c1a = &rows[3];
                assert_eq!(c1a["prompt"]["token_ids"], json!([17, 10, 17, 30]), "{name}: {c1a}");
                assert_eq!(c1a["response"]["token_ids"], json!([19]), "{name}: {c1a}");
                assert_eq!(c1a["metadata"]["request"]["llm_model"], "gpt-x", "{name}: {c1a}");
                assert_eq!(c1a["metadata"]["sequence_id"], "C1", "{name}: {c1a}");
            }
            _ => {
                assert_rows(&rows, &expected(shape, text), name);
                assert_rows(&pa_rows, &expected(shape, text), &format!("{name} (pyarrow)"));
                if format == "jsonl" {
                    assert_rows(&api_jsonl[name], &expected(shape, text), &format!("{name} (as written)"));
                }
            }
        }
    }

    // The CLI writes the same files (beside the live collector), and a manifest with counts.
    let dir = s.dir.clone();
    let db = s.db.to_string_lossy().into_owned();
    for (shape, text) in &variants {
        for format in ["jsonl", "parquet"] {
            let name = format!("{shape}{}.{format}", if *text { "-text" } else { "" });
            let out = dir.join(format!("cli-{name}"));
            let out_s = out.to_string_lossy().into_owned();
            let mut args = vec!["export", "--db", &db, "--shape", shape, "--format", format, "-o", &out_s];
            if *text {
                args.push("--text");
            }
            let (ok, stderr) = cli(&dir, &args);
            assert!(ok, "{args:?}: {stderr}");
            let bytes = std::fs::read(&out).expect("CLI file");
            let m: Value = serde_json::from_slice(&std::fs::read(format!("{out_s}.manifest.json")).expect("manifest")).expect("manifest JSON");
            assert_eq!(m["sha256"], sha256(&bytes), "{name}: the manifest records the file's SHA-256");
            assert_eq!(m["shape"], *shape);
            assert_eq!(m["format"], format);
            assert_eq!(m["counts"]["triplets"], 7, "{name}: {m}");
            if format == "jsonl" {
                let api = &api_jsonl[&name];
                assert_eq!(&lines(&bytes), api, "{name}: CLI and API rows agree");
                assert_eq!(m["counts"]["rows"], api.len(), "{name}: {m}");
            }
        }
    }
    // Skip reasons are counted.
    let dpo: Value = serde_json::from_slice(&std::fs::read(dir.join("cli-trl-dpo.jsonl.manifest.json")).expect("manifest")).expect("json");
    assert_eq!(dpo["counts"]["skipped"], json!({"no_reward": 1, "unpaired": 4}), "{dpo}");
    let sft: Value = serde_json::from_slice(&std::fs::read(dir.join("cli-trl-sft.jsonl.manifest.json")).expect("manifest")).expect("json");
    assert_eq!(sft["counts"]["skipped"], json!({"below_threshold": 1, "no_reward": 1}), "{sft}");
    assert_eq!(sft["options"], json!({"threshold": 0.5, "margin": 0.1, "prompt_field": null, "completion_field": null, "text": false}));
    s.stop();
}

/// The options change the rows: `threshold`, `margin`, `prompt_field`, `completion_field`.
#[test]
fn options_choose_the_rows_and_their_fields() {
    let s = common::Server::start(&[]);
    fill(&s);
    let get = |q: &str| {
        let (status, _, body) = get_text(&s.url(&format!("/api/v1/export?{q}")));
        assert_eq!(status, 200, "{q}: {body}");
        lines(body.as_bytes())
    };
    // Only C1-a reaches 0.95; 0.6 and up: S1-0, S1-1, C1-a (S1-2 is 0.5, C2-a 0.55).
    assert_eq!(get("shape=trl-sft&threshold=0.95").len(), 1);
    assert_eq!(get("shape=trl-sft&threshold=0.6").len(), 3, "0.6 itself counts");
    let kto = get("shape=trl-kto&threshold=0.9");
    assert_eq!(kto.iter().map(|r| r["label"] == true).collect::<Vec<_>>(), vec![false, true, false, true, false, false]);
    // C1-a against C1-b differ by 0.8: a pair up to margin 0.8, none above.
    assert_eq!(get("shape=trl-dpo&margin=0.8").len(), 1);
    assert_eq!(get("shape=trl-dpo&margin=0.81").len(), 0);
    // With margin 0 and a pointer that gives every S1 triplet the same prompt (its task id),
    // S1-1 (0.9) pairs against S1-2 (0.5); the LLM calls have no task id and are skipped.
    let rows = get(&format!("shape=trl-dpo&margin=0&prompt_field={}&completion_field={}", pct("/state/task_id"), pct("/action/output")));
    assert_rows(&rows, &[json!({"prompt": user("T-1"), "chosen": assistant("code"), "rejected": assistant("tests")})], "dpo by task id");
    let (_, _, m) = get_text(&s.url(&format!("/api/v1/export?shape=trl-dpo&prompt_field={}&manifest=true", pct("/state/task_id"))));
    let m = lines(m.as_bytes()).pop().expect("manifest line");
    assert_eq!(m["manifest"]["counts"]["skipped"]["prompt_field_missing"], 3, "{m}");
    assert_eq!(m["manifest"]["options"]["prompt_field"], "/state/task_id", "{m}");
    // A completion field for the stepwise rows, as plain text.
    let rows = get(&format!("shape=trl-stepwise&text=true&completion_field={}&sequence_id=S1", pct("/action/output")));
    assert_rows(&rows, &[json!({"prompt": r#"{"agent_role":"Plan","task_id":"T-1"}"#, "completions": ["plan", "code", "tests"], "labels": [true, true, true]})], "stepwise");
    // Filters work on every shape.
    assert_eq!(get("shape=trl-prompt-completion&role=Code").len(), 1);
    assert_eq!(get("shape=agentlightning&rewarded=false").len(), 1);
}

/// A manifest rebuilds the same file, byte for byte, from the CLI and the API, however many
/// spans and rewards arrived since; a new export sees them.
#[test]
fn manifests_rebuild_the_same_file_after_more_data() {
    let py = python();
    let mut s = common::Server::start(&[]);
    fill(&s);
    let dir = s.dir.clone();
    let db = s.db.to_string_lossy().into_owned();
    let cases = [("triplets", "jsonl"), ("trl-dpo", "parquet"), ("trl-stepwise", "parquet"), ("trl-kto", "jsonl"), ("agentlightning", "parquet")];
    let mut first = Vec::new();
    for (shape, format) in cases {
        let out = dir.join(format!("{shape}.{format}"));
        let out_s = out.to_string_lossy().into_owned();
        let (ok, stderr) = cli(&dir, &["export", "--db", &db, "--shape", shape, "--format", format, "-o", &out_s]);
        assert!(ok, "{stderr}");
        let bytes = std::fs::read(&out).expect("file");
        let m: Value = serde_json::from_slice(&std::fs::read(format!("{out_s}.manifest.json")).expect("manifest")).expect("json");
        assert_eq!(m["sha256"], sha256(&bytes));
        for k in ["shape", "format", "options", "filters", "reward_policy", "reward_policy_hash", "rltrace_version", "format_version", "counts", "exported_at", "watermarks"] {
            assert!(!m[k].is_null(), "manifest has {k}: {m}");
        }
        assert!(m["watermarks"]["span"].as_i64().is_some_and(|n| n > 0) && m["watermarks"]["event"].as_i64().is_some_and(|n| n > 0), "{m}");
        first.push((shape, format, out, bytes, m));
    }

    // More spans, in old and new sequences, and more rewards that change old triplets.
    send(&s, &[
        triplet("S1", 3, "Postmortem", 40).attr("rl.triplet_id", json!("S1-3")).attr("rl.reward", json!(1.0)),
        triplet("N", 0, "Code", 41).attr("rl.triplet_id", json!("N-0")).attr("rl.reward", json!(0.4)),
    ]);
    reward_created(&s, &json!({"target": {"sequence_id": "S1"}, "value": 0.0, "source": "hitl"}));
    reward_created(&s, &json!({"target": {"triplet_id": "C1-b"}, "value": 0.9, "source": "judge"}));
    reward_created(&s, &json!({"target": {"triplet_id": "U-0"}, "value": 0.7, "source": "tests"}));

    for (shape, format, out, bytes, m) in &first {
        let mpath = format!("{}.manifest.json", out.display());
        let again = dir.join(format!("again-{shape}.{format}"));
        let again_s = again.to_string_lossy().into_owned();
        let (ok, stderr) = cli(&dir, &["export", "--db", &db, "--from-manifest", &mpath, "-o", &again_s]);
        assert!(ok, "{stderr}");
        assert!(stderr.contains("rebuilt byte for byte"), "{stderr}");
        assert!(std::fs::read(&again).expect("rebuilt") == *bytes, "{shape} {format}: rebuilt byte for byte from the CLI");
        let m2: Value = serde_json::from_slice(&std::fs::read(format!("{again_s}.manifest.json")).expect("manifest")).expect("json");
        assert_eq!(&m2, m, "the rebuilt file's manifest is the same");
        // The API's as_of parameters rebuild it too (the Parquet file carries its manifest).
        let q = format!(
            "shape={shape}&format={format}&as_of_span={}&as_of_event={}&as_of_time={}{}",
            m["watermarks"]["span"],
            m["watermarks"]["event"],
            pct(m["exported_at"].as_str().unwrap_or_default()),
            if *format == "parquet" { "&manifest=true" } else { "" }
        );
        let (status, _, api) = get_bytes(&s.url(&format!("/api/v1/export?{q}")));
        assert_eq!(status, 200, "{q}");
        assert!(api == *bytes, "{shape} {format}: rebuilt byte for byte by the API ({q})");
        // Without as_of the new data is there.
        let (_, _, now) = get_bytes(&s.url(&format!("/api/v1/export?shape={shape}&format={format}{}", if *format == "parquet" { "&manifest=true" } else { "" })));
        assert!(now != *bytes, "{shape} {format}: a new export sees the new spans and rewards");
    }
    // The new data as read now: S1's hitl is 0.0 (latest), so S1-1 falls to 0.
    let (_, _, now) = get_text(&s.url("/api/v1/export?shape=triplets&sequence_id=S1"));
    let now = lines(now.as_bytes());
    assert_eq!(now.len(), 4);
    assert!(close(&now[1]["reward"], &json!(0.0)), "{}", now[1]);

    if let Some(py) = py {
        // The manifest inside the Parquet file, as pyarrow reads it.
        let (shape, _, path, _, m) = first.iter().find(|c| c.0 == "trl-dpo").expect("dpo case");
        let rep = &read_with_python(&py, &[json!({"path": path.to_string_lossy(), "shape": shape, "format": "parquet"})])[0];
        let embedded: Value = serde_json::from_str(rep["metadata"]["rltrace.manifest"].as_str().unwrap_or("null")).expect("embedded manifest");
        let mut without_sha = m.clone();
        without_sha.as_object_mut().map(|o| o.remove("sha256"));
        assert_eq!(embedded, without_sha, "the Parquet file carries its manifest (all but its own hash)");
        assert_rows(rep["rows"].as_array().map(Vec::as_slice).unwrap_or_default(), &expected("trl-dpo", false), "the file read back");
    }
    s.stop();
}

fn agl_python() -> Option<PathBuf> {
    common::agl_python("Agent Lightning test")
}

/// The `agentlightning` rows, in JSONL and Parquet, validate against Agent Lightning's own
/// `Triplet` model (the `agentlightning` package), with the rewards computed by hand.
#[test]
fn agentlightning_rows_validate_against_its_triplet_model() {
    let Some(py) = agl_python() else { return };
    let s = common::Server::start(&[]);
    fill(&s);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut paths = Vec::new();
    for format in ["jsonl", "parquet"] {
        let (status, _, body) = get_bytes(&s.url(&format!("/api/v1/export?shape=agentlightning&format={format}")));
        assert_eq!(status, 200);
        let p = dir.path().join(format!("al.{format}"));
        std::fs::write(&p, body).expect("write");
        paths.push(p);
    }
    let report = dir.path().join("report.json");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/validate_agentlightning.py");
    let o = Command::new(&py).arg(&script).arg(&paths[0]).arg(&paths[1]).arg(&report).env("LITELLM_LOCAL_MODEL_COST_MAP", "True").env("PYTHONDONTWRITEBYTECODE", "1").output().expect("run python");
    assert!(o.status.success(), "validate_agentlightning.py failed:\n{}\n{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    let triplets: Vec<Value> = serde_json::from_slice(&std::fs::read(&report).expect("report")).expect("json");
    assert_eq!(triplets.len(), 7);
    for (t, (id, w)) in triplets.iter().zip(rewards()) {
        assert!(close(&t["reward"], &json!(w)), "{id}: {t}");
        assert_eq!(t["metadata"]["triplet_id"], id);
        let (p, c) = prompt_completion(id);
        assert_eq!(t["prompt"]["raw_content"], p, "{id}");
        assert_eq!(t["response"]["raw_content"], c, "{id}");
    }
    assert_eq!(triplets[3]["prompt"]["token_ids"], json!([17, 10, 17, 30]));
}

/// Bad input: 400 naming the parameter, nothing written; the CLI fails naming the flag and
/// leaves no file behind.
#[test]
fn bad_input_is_refused_and_writes_nothing() {
    let s = common::Server::start(&[]);
    fill(&s);
    let bad = [
        ("shape=trl-ppo", "shape"),
        ("format=csv", "format"),
        ("threshold=1.5", "threshold"),
        ("threshold=-0.1", "threshold"),
        ("threshold=NaN", "threshold"),
        ("margin=2", "margin"),
        ("prompt_field=state", "prompt_field"),
        ("prompt_field=%2Fstate%2F~2", "prompt_field"),
        ("completion_field=", "completion_field"),
        ("tresh=0.5", "tresh"),
        ("text=yes", "text"),
        ("as_of_span=3", "as_of_event"),
        ("as_of_span=-1&as_of_event=1&as_of_time=2023-11-14T22%3A13%3A20Z", "as_of_span"),
        ("shape=trl-dpo&shape=trl-kto", "shape"),
    ];
    for (q, param) in bad {
        let (status, ct, body) = get_text(&s.url(&format!("/api/v1/export?{q}")));
        assert_eq!(status, 400, "{q}: {body}");
        assert!(ct.starts_with("application/json"), "{q}: {ct}");
        let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        assert_error(&v, "bad_request", q);
        assert!(v["error"]["message"].as_str().is_some_and(|m| m.contains(param)), "{q}: the message names {param}: {v}");
    }

    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let db = s.db.to_string_lossy().into_owned();
    let out = d.join("out.parquet").to_string_lossy().into_owned();
    let cases: [(&[&str], &str); 8] = [
        (&["--shape", "trl-ppo"], "--shape"),
        (&["--format", "csv"], "--format"),
        (&["--threshold", "1.01"], "--threshold"),
        (&["--margin=-1"], "--margin"),
        (&["--prompt-field", "state/x"], "--prompt-field"),
        (&["--completion-field", "/a~"], "--completion-field"),
        (&["--since", "yesterday"], "--since"),
        (&["--tresh", "0.5"], "--tresh"),
    ];
    for (extra, flag) in cases {
        let mut args = vec!["export", "--db", &db, "--format", "parquet", "-o", &out];
        args.extend_from_slice(extra);
        let (ok, stderr) = cli(d, &args);
        assert!(!ok, "{args:?} must fail");
        assert!(stderr.contains(flag), "{args:?}: the error names {flag}: {stderr}");
        assert_eq!(files_in(d), Vec::<String>::new(), "{args:?}: nothing written");
    }
    // A manifest that is not one, or whose policy does not match its hash.
    let bad_m = d.join("bad.manifest.json");
    std::fs::write(&bad_m, r#"{"shape": "trl-dpo"}"#).expect("write");
    let (ok, stderr) = cli(d, &["export", "--db", &db, "--from-manifest", &bad_m.to_string_lossy(), "-o", &out]);
    assert!(!ok && stderr.contains("format"), "{stderr}");
    let (ok, stderr) = cli(d, &["export", "--db", &db, "--from-manifest", &bad_m.to_string_lossy(), "--shape", "triplets", "-o", &out]);
    assert!(!ok && stderr.contains("--shape"), "--from-manifest takes no other choice: {stderr}");
    assert_eq!(files_in(d), vec!["bad.manifest.json".to_string()], "nothing written");
}

/// The memory bounds at their edge: distinct DPO prompts, bytes of waiting DPO members, steps
/// of a stepwise row. At the bound the export succeeds; one past it fails clearly and leaves
/// no file.
#[test]
fn export_bounds_hold_at_their_edge() {
    let s = common::Server::start(&[]);
    fill(&s);
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let db = s.db.to_string_lossy().into_owned();
    let run = |shape: &str, format: &str, flag: &str, value: &str| {
        let out = d.join(format!("{shape}-{value}.{format}"));
        let out_s = out.to_string_lossy().into_owned();
        let (ok, stderr) = cli(d, &["export", "--db", &db, "--shape", shape, "--format", format, flag, value, "-o", &out_s]);
        (ok, stderr, out.exists(), PathBuf::from(format!("{out_s}.manifest.json")).exists())
    };
    // Rewarded prompts: three S1 states and the one LLM prompt.
    for format in ["jsonl", "parquet"] {
        let (ok, stderr, file, manifest) = run("trl-dpo", format, "--max-dpo-prompts", "4");
        assert!(ok && file && manifest, "four prompts fit a bound of four: {stderr}");
        let (ok, stderr, file, manifest) = run("trl-dpo", format, "--max-dpo-prompts", "3");
        assert!(!ok && stderr.contains("more than 3 distinct prompts"), "{stderr}");
        assert!(!file && !manifest, "no file past the bound");
        // The first member waiting for its pair: C1-a's prompt (user, "2+2?") and completion
        // (assistant, "4"), counted as role + content + 16 bytes a message: 24 + 26 = 50.
        let (ok, stderr, _, _) = run("trl-dpo", format, "--max-dpo-pending-bytes", "50");
        assert!(ok, "50 bytes fit: {stderr}");
        let (ok, stderr, file, _) = run("trl-dpo", format, "--max-dpo-pending-bytes", "49");
        assert!(!ok && stderr.contains("more than 49 bytes") && !file, "{stderr}");
        // The longest sequence has three rewarded steps.
        let (ok, stderr, _, _) = run("trl-stepwise", format, "--max-steps", "3");
        assert!(ok, "{stderr}");
        let (ok, stderr, file, _) = run("trl-stepwise", format, "--max-steps", "2");
        assert!(!ok && stderr.contains("more than 2 rewarded steps") && stderr.contains("S1") && !file, "{stderr}");
    }
    let left: Vec<String> = files_in(d).into_iter().filter(|f| f.contains("partial")).collect();
    assert!(left.is_empty(), "no partial files: {left:?}");
}

/// The API answers the DPO bound with the REST error shape (422) before it sends anything, and
/// serves the export at the bound.
#[test]
fn the_api_answers_a_dpo_bound_with_422() {
    for (bound, status) in [("4", 200), ("3", 422)] {
        let s = common::Server::start(&["--max-dpo-prompts", bound]);
        fill(&s);
        let (got, ct, body) = get_text(&s.url("/api/v1/export?shape=trl-dpo&format=parquet"));
        assert_eq!(got, status, "bound {bound}: {body}");
        if status == 422 {
            assert!(ct.starts_with("application/json"), "{ct}");
            let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            assert_error(&v, "validation_failed", "dpo bound");
            assert!(v["error"]["message"].as_str().is_some_and(|m| m.contains("more than 3 distinct prompts")), "{v}");
        }
        // Other shapes are not bounded by it.
        let (got, _, _) = get_text(&s.url("/api/v1/export?shape=trl-kto"));
        assert_eq!(got, 200);
    }
}
