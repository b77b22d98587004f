//! The PostgreSQL store end to end (DESIGN section 9): several real `rltrace serve` processes on
//! one database (spans sent to any stored once, the same answers from any, one event per
//! idempotency key, default sequence indexes across collectors, one process settling fallbacks),
//! and PostgreSQL stopped under load (errors, not success and not endless overload; `/readyz`
//! 503; recovery by itself; nothing acknowledged lost), or crashed (what was acknowledged is
//! there after recovery); the load generator's raw baselines. The kill -9 of a collector under
//! load is in `restart.rs`. Databases live on the tests' server (`RLTRACE_TEST_POSTGRES`, started
//! by scripts/test.sh); the fault tests start servers of their own.

mod api_support;
mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use api_support::{BASE_NS, SEC, get_ok, get_text, pct, request, send, span, span_id, trace_id};
use common::{OwnPostgres, PgDatabase, Server};
use serde_json::{Value, json};

/// A triplet span of `seq` with no explicit index, starting `secs` after BASE_NS.
fn step(seq: &str, role: &str, secs: u64) -> api_support::SpanB {
    span(&trace_id(), &span_id(), &format!("agent.{role}"), BASE_NS + secs * SEC)
        .attr("rl.sequence_id", json!(seq))
        .attr("rl.state.agent_role", json!(role))
        .attr("rl.state.step", json!(secs as i64))
        .attr("rl.action.success", json!(true))
        .attr("rl.reward", json!(0.5))
}

/// The answers that must agree between collectors: stats, the sequence list, each sequence.
fn answers(s: &Server, seqs: &[&str]) -> Value {
    let mut stats = get_ok(&s.url("/api/v1/stats"));
    if let Some(o) = stats.as_object_mut() {
        // A rate of this process's own ingest, not a stored fact.
        o.remove("ingest_spans_per_s");
    }
    let list = get_ok(&s.url("/api/v1/sequences?limit=100"));
    // Triplets by role in arrival order (posting rows written by whichever collector stored them).
    let roles: Vec<Value> = ["Code", "Test", "Planning"].iter().map(|r| get_ok(&s.url(&format!("/api/v1/triplets?role={r}&limit=1000")))).collect();
    let each: Vec<Value> = seqs.iter().map(|q| get_ok(&s.url(&format!("/api/v1/sequences/{}", pct(q))))).collect();
    let (status, _, jsonl) = get_text(&s.url("/api/v1/export?format=jsonl"));
    assert_eq!(status, 200, "export: {jsonl}");
    json!({"stats": stats, "list": list, "roles": roles, "sequences": each, "export": jsonl})
}

fn two_collectors(db: &PgDatabase, extra: &[&str], logs: Option<&std::path::Path>) -> (Server, Server) {
    let log = |n: &str| logs.map(|d| d.join(n));
    let a = Server::start_store(&db.url, extra, log("a.log").as_deref());
    let b = Server::start_store(&db.url, extra, log("b.log").as_deref());
    (a, b)
}

#[test]
fn spans_sent_to_any_collector_are_stored_once_and_every_collector_answers_the_same() {
    let db = PgDatabase::new();
    let (a, b) = two_collectors(&db, &[], None);

    // The same batch to both (an exporter retrying against another collector): stored once.
    let batch: Vec<_> = (0..5).map(|i| step("retried", "Code", 10 + i)).collect();
    send(&a, &batch);
    send(&b, &batch);

    // One sequence whose triplets (no rl.sequence_index) arrive at alternate collectors, out of
    // time order: the default index is the time order, whoever stored them.
    let shared: Vec<_> = (0..8).map(|i| step("shared", if i % 2 == 0 { "Planning" } else { "Code" }, 100 + i)).collect();
    for i in [5usize, 0, 7, 2, 1, 6, 3, 4] {
        send(if i % 2 == 0 { &a } else { &b }, &shared[i..=i]);
    }

    // The same batches from two threads to both collectors at once.
    let racing: Vec<Vec<api_support::SpanB>> = (0..6).map(|k| (0..20).map(|i| step(&format!("race-{k}"), "Test", 200 + i)).collect()).collect();
    std::thread::scope(|sc| {
        for s in [&a, &b] {
            let racing = &racing;
            sc.spawn(move || {
                for batch in racing {
                    send(s, batch);
                }
            });
        }
    });

    let stats = get_ok(&a.url("/api/v1/stats"));
    assert_eq!(stats["spans"], 5 + 8 + 6 * 20, "{stats}");
    assert_eq!(stats["sequences"], 2 + 6, "{stats}");
    let seq = get_ok(&b.url("/api/v1/sequences/shared"));
    let order: Vec<(i64, i64)> = seq["triplets"]
        .as_array()
        .expect("triplets")
        .iter()
        .map(|t| (t["sequence_index"].as_i64().unwrap_or(-1), t["state"]["step"].as_i64().unwrap_or(-1)))
        .collect();
    assert_eq!(order, (0..8).map(|i| (i, 100 + i)).collect::<Vec<_>>(), "default indexes follow time across collectors: {seq}");
    for t in seq["triplets"].as_array().expect("triplets") {
        assert_eq!(t["reward"], 0.5, "{t}");
    }

    let names = ["retried", "shared", "race-0", "race-5"];
    let from_a = answers(&a, &names);
    let from_b = answers(&b, &names);
    assert_eq!(from_a, from_b, "both collectors answer the same");
    assert_eq!(from_a["export"].as_str().map(|t| t.lines().count()), Some(5 + 8 + 6 * 20));
    let by_role = |k: usize| from_a["roles"][k]["items"].as_array().map(Vec::len);
    assert_eq!((by_role(0), by_role(1), by_role(2)), (Some(5 + 4), Some(6 * 20), Some(4)), "Code, Test, Planning: {}", from_a["roles"]);
    // Planning's triplets came in the order they were sent: steps 100, 102, 104, 106 as sent.
    let planning: Vec<i64> = from_a["roles"][2]["items"].as_array().into_iter().flatten().map(|t| t["state"]["step"].as_i64().unwrap_or(-1)).collect();
    assert_eq!(planning, [100, 102, 106, 104], "arrival order: {planning:?}");
}

#[test]
fn one_idempotency_key_sent_to_both_collectors_makes_one_event() {
    let db = PgDatabase::new();
    let (a, b) = two_collectors(&db, &[], None);
    let spans: Vec<_> = (0..3).map(|i| step("reviewed", "Code", 10 + i)).collect();
    send(&a, &spans);
    let body = json!({
        "target": {"sequence_id": "reviewed"},
        "source": "hitl",
        "value": 1.0,
        "idempotency_key": "review-42",
    });
    // Both at once, several times each.
    let answers: Vec<(u16, Value)> = std::thread::scope(|sc| {
        let hs: Vec<_> = [&a, &b, &a, &b]
            .into_iter()
            .map(|s| {
                let body = body.clone();
                sc.spawn(move || common::post_json(&s.url("/api/v1/rewards"), &body))
            })
            .collect();
        hs.into_iter().map(|h| h.join().expect("thread")).collect()
    });
    let ids: BTreeSet<String> = answers
        .iter()
        .map(|(status, v)| {
            assert!(*status == 201 || *status == 200, "answered {status}: {v}");
            v["reward_id"].as_str().expect("reward_id").to_string()
        })
        .collect();
    assert_eq!(ids.len(), 1, "one event for one key: {answers:?}");
    assert_eq!(answers.iter().filter(|(s, _)| *s == 201).count(), 1, "created once, replayed otherwise: {answers:?}");
    for s in [&a, &b] {
        let seq = get_ok(&s.url("/api/v1/sequences/reviewed"));
        let hitl: Vec<&Value> = seq["ledger"].as_array().expect("ledger").iter().filter(|e| e["source"] == "hitl").collect();
        assert_eq!(hitl.len(), 1, "{seq}");
        assert_eq!(seq["complete"], true, "{seq}");
    }
    // The key with another body is a conflict on either collector.
    let other = json!({"target": {"sequence_id": "reviewed"}, "source": "hitl", "value": 0.0, "idempotency_key": "review-42"});
    for s in [&a, &b] {
        let (status, v) = common::post_json(&s.url("/api/v1/rewards"), &other);
        assert_eq!(status, 409, "{v}");
    }
}

/// Holders of the settle lock (the advisory lock key 0x726c74720002 of `rltrace_store::pg`).
fn settle_lock_holders(db: &PgDatabase) -> i64 {
    let mut c = db.client();
    c.query_one(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND classid = $1 AND objid = $2",
        &[&(0x726c_i64 as u32), &(0x7472_0002_i64 as u32)],
    )
    .map(|r| r.get::<_, i64>(0))
    .expect("pg_locks")
}

fn fallbacks(s: &Server, seq: &str) -> usize {
    let (status, v) = common::get_json(&s.url(&format!("/api/v1/sequences/{}", pct(seq))));
    if status != 200 {
        return 0;
    }
    v["ledger"].as_array().map_or(0, |l| l.iter().filter(|e| e["source"] == "fallback").count())
}

#[test]
fn one_collector_at_a_time_settles_fallbacks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, "default_reward = 0.3\nreward_wait = \"1s\"\n").expect("policy");
    let policy = policy.to_string_lossy().into_owned();
    let db = PgDatabase::new();
    let (mut a, mut b) = two_collectors(&db, &["--policy", &policy], Some(dir.path()));

    send(&a, &[step("idle-1", "Code", 1)]);
    assert!(common::wait_until(30, || fallbacks(&a, "idle-1") > 0), "the fallback is applied after reward_wait");
    // Both collectors keep running their settle loop; the sequence still has one fallback.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(fallbacks(&a, "idle-1"), 1);
    assert_eq!(fallbacks(&b, "idle-1"), 1);
    assert_eq!(settle_lock_holders(&db), 1, "one session holds the settle lock");
    let says = |p: &str| std::fs::read_to_string(dir.path().join(p)).unwrap_or_default().contains("settles fallbacks");
    let (a_leads, b_leads) = (says("a.log"), says("b.log"));
    assert!(a_leads ^ b_leads, "exactly one collector settles (a: {a_leads}, b: {b_leads})");

    // The leader dies; the other takes the lock and settles what comes next.
    let survivor = if a_leads {
        a.kill();
        &b
    } else {
        b.kill();
        &a
    };
    send(survivor, &[step("idle-2", "Code", 2)]);
    assert!(common::wait_until(30, || fallbacks(survivor, "idle-2") > 0), "the surviving collector settles");
    assert_eq!(fallbacks(survivor, "idle-2"), 1);
    assert_eq!(settle_lock_holders(&db), 1);
    assert!(says("a.log") && says("b.log"), "the survivor took the settle lock over");
}

/// POST one OTLP/JSON batch; the status and whether a `Retry-After` came with it.
fn post_batch(s: &Server, spans: &[api_support::SpanB]) -> (u16, bool) {
    let body = serde_json::to_vec(&request(spans)).expect("serialise");
    let (status, headers, _) = common::post_raw(&s.url("/v1/traces"), "application/json", &[], body);
    (status, headers.contains_key("retry-after"))
}

#[test]
fn a_stopped_database_is_answered_with_errors_and_the_collector_recovers() {
    let pg = OwnPostgres::start();
    let s = Server::start_store(&pg.url, &[], None);
    let mut acked: Vec<String> = Vec::new();
    let mut n = 0u64;
    let batch = |n: &mut u64| -> Vec<api_support::SpanB> {
        *n += 1;
        (0..10).map(|i| step(&format!("fault-{n}"), "Code", *n * 100 + i)).collect()
    };
    for _ in 0..5 {
        let b = batch(&mut n);
        assert_eq!(post_batch(&s, &b).0, 200);
        acked.push(format!("fault-{n}"));
    }

    pg.pause();
    // Errors, promptly: not success, and not an overload answer to retry for ever.
    let started = Instant::now();
    let mut statuses = Vec::new();
    for _ in 0..10 {
        let b = batch(&mut n);
        let (status, retry_after) = post_batch(&s, &b);
        assert_ne!(status, 200, "a batch was acknowledged while the database is stopped");
        statuses.push((status, retry_after));
    }
    assert!(started.elapsed() < Duration::from_secs(60), "answers while the database is down took {:?}", started.elapsed());
    let errors = statuses.iter().filter(|(st, ra)| *st == 500 && !*ra).count();
    assert!(errors >= 8, "a stopped database is answered 500 without Retry-After: {statuses:?}");
    let (ready, body) = common::get_json(&s.url("/readyz"));
    assert_eq!(ready, 503, "{body}");

    pg.resume();
    // Recovery by itself: readiness and ingest come back without a restart.
    assert!(common::wait_until(30, || common::get_json(&s.url("/readyz")).0 == 200), "readyz recovers");
    let b = batch(&mut n);
    let mut ok = false;
    for _ in 0..50 {
        if post_batch(&s, &b).0 == 200 {
            ok = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(ok, "ingest recovers after the database returns");
    acked.push(format!("fault-{n}"));
    for seq in &acked {
        let v = get_ok(&s.url(&format!("/api/v1/sequences/{seq}")));
        assert_eq!(v["triplet_count"], 10, "{seq}: {v}");
    }
    let stats = get_ok(&s.url("/api/v1/stats"));
    assert_eq!(stats["spans"], acked.len() as u64 * 10, "nothing of the refused batches was stored: {stats}");
}

/// The triplet count of each sequence once the collector answers again (its sessions reconnect
/// after the database restarted), `None` for one it does not know.
fn counts_after_restart(s: &Server, seqs: &[String]) -> Vec<Option<u64>> {
    let read = || -> Option<Vec<Option<u64>>> {
        seqs.iter()
            .map(|q| match common::get_json(&s.url(&format!("/api/v1/sequences/{}", pct(q)))) {
                (200, v) => Some(v["triplet_count"].as_u64()),
                (404, _) => Some(None),
                _ => None,
            })
            .collect()
    };
    let mut last = None;
    assert!(
        common::wait_until(60, || {
            last = read();
            last.is_some()
        }),
        "the collector answers reads after the database restarted"
    );
    last.unwrap_or_default()
}

/// What a collector acknowledged survives a crash of the database (an immediate shutdown, which
/// loses every commit the write-ahead log had not flushed). The server's WAL writer is slowed to
/// 10 s here, so a group answered before the flush that makes its commit durable (an
/// asynchronous commit, which this test fails on) would be lost.
#[test]
fn acknowledged_spans_survive_a_database_crash() {
    let pg = OwnPostgres::start_with(true, "-c wal_writer_delay=10000");
    let s = Server::start_store(&pg.url, &[], None);
    let mut acked: Vec<String> = Vec::new();
    for round in 0..3u64 {
        let seq = format!("crash-{round}");
        let b: Vec<api_support::SpanB> = (0..10).map(|i| step(&seq, "Code", round * 100 + i)).collect();
        // After a restart the collector reconnects first.
        assert!(common::wait_until(30, || post_batch(&s, &b).0 == 200), "round {round}: the batch is acknowledged");
        acked.push(seq);
        pg.crash();
        pg.resume();
        let counts = counts_after_restart(&s, &acked);
        assert_eq!(counts, vec![Some(10); acked.len()], "round {round}: every acknowledged span is stored after the crash: {acked:?}");
    }
}

#[test]
fn a_bad_store_url_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ok, _, err) = common::run_cli(dir.path(), &["serve", "--store", "mysql://u:secret@127.0.0.1:1/db"]);
    assert!(!ok);
    assert!(err.contains("unsupported store URL") && !err.contains("secret"), "{err}");
    // Nothing listens on port 1: a connection error naming the server, never the password.
    let (ok, _, err) = common::run_cli(dir.path(), &["serve", "--store", "postgres://u:secret@127.0.0.1:1/db", "--pg-connect-timeout", "2"]);
    assert!(!ok);
    assert!(err.contains("cannot connect to postgres://u@127.0.0.1:1/db") && !err.contains("secret"), "{err}");
    // A password in the query is never shown either.
    let (ok, _, err) = common::run_cli(dir.path(), &["serve", "--store", "postgres://u@127.0.0.1:1/db?password=secret", "--pg-connect-timeout", "2"]);
    assert!(!ok);
    assert!(err.contains("cannot connect to postgres://u@127.0.0.1:1/db") && !err.contains("secret"), "{err}");
}

#[test]
fn a_group_that_cannot_take_the_write_lock_fails_and_the_next_one_works() {
    let db = PgDatabase::new();
    let s = Server::start_store(&db.url, &["--pg-statement-timeout", "1"], None);
    assert_eq!(post_batch(&s, &[step("before", "Code", 1)]).0, 200);
    // Another session holds the write lock (the key of rltrace_store::pg::WRITE_LOCK) past the
    // collector's statement timeout: its group cannot start.
    let mut holder = db.client();
    holder.batch_execute("SELECT pg_advisory_lock(125810135662593)").expect("take the write lock");
    let (status, _) = post_batch(&s, &[step("blocked", "Code", 2)]);
    assert_eq!(status, 500, "a group that cannot take the write lock fails");
    holder.batch_execute("SELECT pg_advisory_unlock(125810135662593)").expect("release");
    // The collector's session was not left inside the failed transaction: the next group works.
    let mut ok = false;
    for _ in 0..30 {
        if post_batch(&s, &[step("after", "Code", 3)]).0 == 200 {
            ok = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(ok, "ingest works again once the lock is free");
    assert!(common::wait_until(10, || common::get_json(&s.url("/readyz")).0 == 200), "and the store is ready");
    assert_eq!(get_ok(&s.url("/api/v1/stats"))["spans"], 2);
}

#[test]
fn a_pending_reward_taken_by_one_collector_joins_its_triplet_stored_by_another() {
    let db = PgDatabase::new();
    let (a, b) = two_collectors(&db, &[], None);
    // Something is stored first, so collector B's writer has a ledger position to catch up from.
    send(&b, &[step("warm", "Code", 1)]);
    let body = json!({"target": {"triplet_id": "later-triplet"}, "value": 0.7, "source": "judge", "pending": true});
    let (status, ev) = common::post_json(&a.url("/api/v1/rewards"), &body);
    assert_eq!(status, 201, "{ev}");
    assert_eq!(ev["pending"], true, "{ev}");
    // The triplet arrives at the other collector.
    send(&b, &[step("joined", "Code", 2).attr("rl.triplet_id", json!("later-triplet"))]);
    for s in [&a, &b] {
        let t = get_ok(&s.url("/api/v1/triplets/later-triplet"));
        let judge: Vec<&Value> = t["ledger"].as_array().expect("ledger").iter().filter(|e| e["source"] == "judge").collect();
        assert_eq!(judge.len(), 1, "{t}");
        assert_eq!(judge[0]["pending"], false, "the pending reward joined its triplet: {t}");
        assert_eq!(t["reward_sources"]["judge"], 0.7, "{t}");
    }
}

/// `rltrace loadgen --baseline` (the ratio of DESIGN section 8) against a collector on PostgreSQL:
/// the raw COPY of the same rows goes to a scratch table of its own, which is gone afterwards;
/// the store holds exactly the load's spans; the summary names the baseline and its ratio is the
/// load's rate over the baseline's. The SQLite baseline the same way, and a baseline store that
/// is not PostgreSQL is refused before anything is sent.
#[test]
fn the_load_generators_raw_baselines_report_their_ratio_and_leave_nothing_behind() {
    let db = PgDatabase::new();
    let s = Server::start_store(&db.url, &[], None);
    let dir = tempfile::tempdir().expect("tempdir");
    let summary = |extra: &[&str]| -> Value {
        let mut args = vec!["loadgen", "--target", &s.http, "--spans", "2000", "--batch", "256", "--json", "--max-seconds", "120", "--baseline"];
        args.extend_from_slice(extra);
        let (ok, stdout, stderr) = common::run_cli(dir.path(), &args);
        assert!(ok, "{stderr}");
        serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
    };
    let baseline_tables = || -> i64 {
        db.client().query_one("SELECT count(*) FROM pg_tables WHERE tablename LIKE 'rltrace_baseline%'", &[]).expect("pg_tables").get(0)
    };

    let pg = summary(&["--baseline-store", &db.url]);
    assert_eq!(pg["baseline"], "postgres-copy", "{pg}");
    assert_eq!(pg["spans_acknowledged"], 2000, "{pg}");
    let num = |k: &str| pg[k].as_f64().unwrap_or_else(|| panic!("{k} is not a number: {pg}"));
    let (rate, base, ratio) = (num("spans_per_s"), num("baseline_rows_per_s"), num("ratio_to_baseline"));
    assert!(rate > 0.0 && base > 0.0, "{pg}");
    assert!((ratio - rate / base).abs() < 1e-9 * ratio.max(1.0), "{pg}");
    assert_eq!(baseline_tables(), 0, "the scratch table is dropped");
    // Only the load's spans reached the store (the baseline's rows have ids of their own).
    assert_eq!(get_ok(&s.url("/api/v1/stats"))["spans"], 2000);

    let scratch = || -> BTreeSet<std::ffi::OsString> {
        std::fs::read_dir(std::env::temp_dir())
            .expect("temp dir")
            .filter_map(|e| e.ok())
            .map(|e| e.file_name())
            .filter(|n| n.to_string_lossy().starts_with("rltrace-baseline-"))
            .collect()
    };
    let before = scratch();
    let sqlite = summary(&[]);
    assert_eq!(sqlite["baseline"], "sqlite-insert", "{sqlite}");
    assert!(sqlite["baseline_rows_per_s"].as_f64().is_some_and(|b| b > 0.0), "{sqlite}");
    assert_eq!(get_ok(&s.url("/api/v1/stats"))["spans"], 4000);
    assert_eq!(scratch(), before, "the SQLite baseline's scratch files are removed");

    // Without a baseline, no baseline fields.
    let (ok, stdout, stderr) = common::run_cli(dir.path(), &["loadgen", "--target", &s.http, "--spans", "100", "--json", "--max-seconds", "60"]);
    assert!(ok, "{stderr}");
    let plain: Value = serde_json::from_str(stdout.trim()).expect("json");
    assert!(plain["baseline"].is_null() && plain["ratio_to_baseline"].is_null(), "{plain}");

    let (ok, _, err) = common::run_cli(dir.path(), &["loadgen", "--target", &s.http, "--spans", "100", "--baseline", "--baseline-store", "mysql://u@127.0.0.1:1/db"]);
    assert!(!ok && err.contains("--baseline-store takes a postgres:// URL"), "{err}");
    assert_eq!(get_ok(&s.url("/api/v1/stats"))["spans"], 4100, "nothing sent after the refusal");
}

/// A test CA, and a server certificate it signed for `names`: (CA certificate, server
/// certificate, server key), PEM files in `dir`.
fn tls_files(dir: &std::path::Path, tag: &str, names: &[&str]) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let (ca, cert, key) = common::test_certificates(tag, names);
    let paths = (dir.join(format!("{tag}-ca.pem")), dir.join(format!("{tag}-server.crt")), dir.join(format!("{tag}-server.key")));
    std::fs::write(&paths.0, ca).expect("write");
    std::fs::write(&paths.1, cert).expect("write");
    std::fs::write(&paths.2, key).expect("write");
    (paths.0, paths.1, paths.2)
}

/// How many of the collectors' sessions on the server are encrypted, of how many.
fn rltrace_sessions_with_tls(admin_url: &str) -> (i64, i64) {
    let mut c = postgres::Client::connect(admin_url, postgres::NoTls).expect("admin connection");
    let r = c
        .query_one(
            "SELECT count(*) FILTER (WHERE s.ssl), count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.application_name = 'rltrace'",
            &[],
        )
        .expect("pg_stat_ssl");
    (r.get(0), r.get(1))
}

/// `postgres://USER:PASSWORD@127.0.0.1:PORT/DB` with `host` in place of the address and `query`
/// added; a host other than 127.0.0.1 is reached at 127.0.0.1 (`hostaddr`) and only named by the
/// URL, for the certificate's check.
fn with_host(url: &str, host: &str, query: &str) -> String {
    let url = url.replacen("@127.0.0.1:", &format!("@{host}:"), 1);
    let mut q: Vec<&str> = Vec::new();
    if host != "127.0.0.1" {
        q.push("hostaddr=127.0.0.1");
    }
    if !query.is_empty() {
        q.push(query);
    }
    if q.is_empty() { url } else { format!("{url}?{}", q.join("&")) }
}

/// `rltrace serve` on `url`, expected to stop at start: its error output. `env` is added to the
/// collector's environment.
fn refused_at_start(dir: &std::path::Path, url: &str, env: &[(&str, &str)]) -> String {
    let out = std::process::Command::new(common::bin())
        .args(["serve", "--store", url, "--http", "127.0.0.1:0", "--grpc", "127.0.0.1:0", "--pg-connect-timeout", "5"])
        .current_dir(dir)
        .env("RLTRACE_LOG", "warn")
        .env("RUST_BACKTRACE", "0")
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run rltrace");
    assert!(!out.status.success(), "{url}: the collector does not start");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// libpq's `sslmode` and `sslrootcert` in the store URL (and `PGSSLMODE`, `PGSSLROOTCERT`): the
/// server's chain and name checked (`verify-full`), its chain only (`verify-ca`, and `require`
/// given a root file), encryption without a check (`require`, and the default `prefer` when the
/// server offers TLS), plain TCP (`disable`), each seen from the server's side (`pg_stat_ssl`); a
/// wrong root, a wrong name, or TLS required from a server without it stop the collector at start
/// with a clear error; a `?` or `&` in the password is not read as the URL's query.
#[test]
fn tls_to_the_database_is_verified_as_sslmode_asks() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The server's certificate names `db.test` only: by address (127.0.0.1), the name is wrong.
    let (ca, cert, key) = tls_files(dir.path(), "a", &["db.test"]);
    let (other_ca, _, _) = tls_files(dir.path(), "b", &["db.test"]);
    let pg = OwnPostgres::start_tls(&cert, &key);
    let admin = with_host(&pg.url, "127.0.0.1", "sslmode=disable");
    let root = |p: &std::path::Path| format!("sslrootcert={}", p.display());
    let no_sessions = || common::wait_until(30, || rltrace_sessions_with_tls(&admin).1 == 0);

    let stores_over_tls = |url: &str, tls: bool| {
        assert!(no_sessions(), "the previous collector's sessions ended");
        let s = Server::start_store(url, &[], None);
        let seq = format!("tls-{}", uuid_tag());
        send(&s, &(0..3).map(|i| step(&seq, "Code", i)).collect::<Vec<_>>());
        let got = get_ok(&s.url(&format!("/api/v1/sequences/{}", pct(&seq))));
        assert_eq!(got["triplet_count"].as_u64(), Some(3), "{url}: {got}");
        let (encrypted, all) = rltrace_sessions_with_tls(&admin);
        assert!(all >= 1, "{url}: the collector's sessions are on the server");
        assert_eq!(encrypted, if tls { all } else { 0 }, "{url}: sessions encrypted {encrypted} of {all}");
    };
    stores_over_tls(&with_host(&pg.url, "db.test", &format!("sslmode=verify-full&{}", root(&ca))), true);
    stores_over_tls(&with_host(&pg.url, "127.0.0.1", &format!("sslmode=verify-ca&{}", root(&ca))), true);
    stores_over_tls(&with_host(&pg.url, "127.0.0.1", &format!("sslmode=require&{}", root(&ca))), true);
    stores_over_tls(&with_host(&pg.url, "127.0.0.1", "sslmode=require"), true);
    stores_over_tls(&pg.url, true);
    stores_over_tls(&with_host(&pg.url, "127.0.0.1", "sslmode=disable"), false);

    let refused = |url: &str, env: &[(&str, &str)], expect: &[&str]| {
        let err = refused_at_start(dir.path(), url, env);
        assert!(expect.iter().all(|e| err.contains(e)) && !err.contains("rltrace-"), "{url}: {err}");
    };
    let cert_error = ["cannot connect to", "certificate"];
    // By address, the certificate does not name the host.
    refused(&with_host(&pg.url, "127.0.0.1", &format!("sslmode=verify-full&{}", root(&ca))), &[], &["cannot connect to", "certificate", "name"]);
    // Another CA signed it: no check passes, `require` with a root file included.
    for mode in ["verify-full", "verify-ca", "require"] {
        refused(&with_host(&pg.url, "db.test", &format!("sslmode={mode}&{}", root(&other_ca))), &[], &cert_error);
    }
    // The same from the environment, where the URL says nothing.
    let other = other_ca.to_string_lossy().into_owned();
    refused(&with_host(&pg.url, "db.test", ""), &[("PGSSLMODE", "verify-full"), ("PGSSLROOTCERT", &other)], &cert_error);
    // A root file that is not there, and a mode that does not exist.
    refused(&with_host(&pg.url, "db.test", "sslmode=verify-full&sslrootcert=/nonexistent/root.pem"), &[], &["sslrootcert /nonexistent/root.pem"]);
    refused(&with_host(&pg.url, "db.test", "sslmode=verify"), &[], &["sslmode \"verify\" is not one of"]);

    // A password holding `?` and `&`: the options after it are still read (`verify-full` against
    // the wrong root is refused, not quietly taken for the default `prefer`), and with the right
    // root the collector stores over TLS.
    {
        let mut c = postgres::Client::connect(&admin, postgres::NoTls).expect("admin connection");
        c.batch_execute("CREATE ROLE tlsq LOGIN PASSWORD 'pa?ss&w=x'").expect("role");
        c.batch_execute("CREATE DATABASE tlsq OWNER tlsq").expect("database");
    }
    let port = pg.url.rsplit_once(':').and_then(|(_, p)| p.split('/').next()).expect("port").to_string();
    // (The options first: a query taken from the password's `?` would swallow the first one.)
    let odd = |query: &str| format!("postgres://tlsq:pa?ss&w=x@db.test:{port}/tlsq?{query}&hostaddr=127.0.0.1");
    refused(&odd("sslmode=verify-full"), &[], &["sslmode=verify-full needs the server's root certificates"]);
    refused(&odd(&format!("sslmode=verify-full&{}", root(&other_ca))), &[], &cert_error);
    stores_over_tls(&odd(&format!("sslmode=verify-full&{}", root(&ca))), true);

    // The tests' shared server has no TLS: `require` refuses it, `prefer` goes on in plain TCP.
    let plain = PgDatabase::new();
    refused(&format!("{}?sslmode=require", plain.url), &[], &["cannot connect to", "TLS"]);
    let s = Server::start_store(&plain.url, &[], None);
    send(&s, &[step("plain", "Code", 1)]);
    assert_eq!(get_ok(&s.url("/api/v1/sequences/plain"))["triplet_count"].as_u64(), Some(1));
}

fn uuid_tag() -> String {
    format!("{:x}", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0))
}
