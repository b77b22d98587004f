//! The store's conformance suite: what every backend must answer the same way (DESIGN sections 4,
//! 5 and 9), each test run against the embedded SQLite store and against a real PostgreSQL server
//! (`RLTRACE_TEST_POSTGRES`, started by scripts/test.sh); each test names the rule it holds. The
//! few tests of one backend's own mechanics (a file's size limit, its WAL, its first schema) say so.

mod common;

use common::*;
use rltrace_core::Policy;
use rltrace_core::reward::Strategy;
use rltrace_store::{RewardAppend, SequenceFilter, Store, StoreConfig, StoreError, TripletFilter};

fn created(r: Result<RewardAppend, StoreError>) {
    match r {
        Ok(RewardAppend::Created(_)) => {}
        other => panic!("expected a created event, got {other:?}"),
    }
}

fn all_triplets(store: &Store, policy: &Policy) -> Vec<rltrace_core::export::TripletView> {
    let mut out = Vec::new();
    store
        .export(&TripletFilter::default(), policy, None, &mut |t| {
            out.push(t.clone());
            Ok(true)
        })
        .expect("export");
    out
}

conformance! {
    fn a_span_sent_twice_is_stored_once(b) {
    let (_d, store) = temp_store_on(b);
    let batch = || prepare((0..5).map(|n| triplet_span(1, n, "s", &[])).collect());
    assert_eq!(store.ingest_blocking(batch()).expect("first").stored, 5);
    let again = store.ingest_blocking(batch()).expect("again");
    assert_eq!((again.stored, again.duplicates), (0, 5));
    let c = store.read(|tx| tx.counts()).expect("counts");
    assert_eq!((c.spans, c.triplets, c.sequences), (5, 5, 1));
}
}

/// A small deterministic generator (no dependency, same mix every run).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

conformance! {
    /// The rewarded counts the store keeps (for `rewarded` filters and the statistics) agree with an
    /// evaluation of every triplet, whatever mix of rewards reached them.
    fn kept_rewarded_counts_agree_with_evaluation(b) {
    let (_d, store) = temp_store_on(b);
    let mut rng = Lcg(7);
    let roles = ["Planning", "Code", "Test"];
    for seq in 0..60u32 {
        let name = format!("task-{seq}");
        let n = 1 + rng.next(5) as u32;
        let spans: Vec<_> = (0..n)
            .map(|k| {
                let mut attrs = vec![("rl.state.agent_role", s(roles[rng.next(3) as usize])), ("rl.state.task_id", s(&name))];
                if rng.next(3) == 0 {
                    attrs.push(("rl.reward.success", f(1.0)));
                }
                let mut sp = triplet_span(seq, seq * 10 + k, &name, &attrs);
                if rng.next(8) == 0 {
                    sp.events.push(reward_event(0.4, "judge", "sequence", if rng.next(2) == 0 { "last" } else { "uniform" }, sp.start_time_unix_nano));
                }
                sp
            })
            .collect();
        store.ingest_blocking(prepare(spans)).expect("ingest");
        match rng.next(7) {
            0 => created(store.append_reward_blocking(on_sequence(&name, Strategy::Uniform, Some(1.0), "hitl"))),
            1 => created(store.append_reward_blocking(on_sequence(&name, Strategy::Role { role: "Code".into() }, Some(0.7), "tests"))),
            2 => created(store.append_reward_blocking(on_sequence(&name, Strategy::Last, Some(0.2), "terminal"))),
            3 => created(store.append_reward_blocking(on_sequence(&name, Strategy::Uniform, None, "hitl"))),
            4 => created(store.append_reward_blocking(defect(&name, "Test"))),
            _ => {}
        }
    }
    // A defect by a task id reaching a sequence that arrives later.
    created(store.append_reward_blocking(NewRewardPending::defect("late-task", "Code")));
    store.ingest_blocking(prepare(vec![triplet_span(900, 9000, "late-task:Code", &[("rl.state.agent_role", s("Code"))])])).expect("late");
    let evaluated = all_triplets(&store, &policy());
    let rewarded = evaluated.iter().filter(|t| t.effective.reward.is_some()).count() as u64;
    assert!(rewarded > 0 && rewarded < evaluated.len() as u64, "the mix must have both: {rewarded} of {}", evaluated.len());
    assert!(evaluated.iter().any(|t| t.sequence_id == "late-task:Code" && t.effective.reward == Some(0.5)));
    let stats = store.read(|tx| tx.stats(&policy())).expect("stats");
    assert_eq!(stats.rewarded_triplets, rewarded, "kept count");
    // A policy with a zero weight takes the evaluating path; an unused source changes nothing.
    let zero = Policy::from_toml("[sources.unused]\nweight = 0.0\n").expect("policy");
    assert_eq!(store.read(|tx| tx.stats(&zero)).expect("stats").rewarded_triplets, rewarded, "evaluated count");
    // The rewarded filter of the sequence list agrees with the triplets.
    let mut by_seq: std::collections::BTreeMap<String, bool> = Default::default();
    for t in &evaluated {
        *by_seq.entry(t.sequence_id.clone()).or_default() |= t.effective.reward.is_some();
    }
    for want in [true, false] {
        let page = store
            .read(|tx| tx.sequences(&SequenceFilter { rewarded: Some(want), ..SequenceFilter::default() }, None, 1000, &policy()))
            .expect("list");
        let got: std::collections::BTreeSet<String> = page.items.iter().map(|s| s.sequence_id.clone()).collect();
        let expected: std::collections::BTreeSet<String> = by_seq.iter().filter(|(_, r)| **r == want).map(|(k, _)| k.clone()).collect();
        assert_eq!(got, expected, "rewarded={want}");
    }
}
}

/// Pending requests as the API makes them (`"pending": true`).
struct NewRewardPending;
impl NewRewardPending {
    fn on_triplet(id: &str, value: f64) -> rltrace_store::NewReward {
        rltrace_store::NewReward { allow_pending: true, ..on_triplet(id, value, "hitl") }
    }
    fn defect(task: &str, phase: &str) -> rltrace_store::NewReward {
        rltrace_store::NewReward { allow_pending: true, ..common::defect(task, phase) }
    }
}

conformance! {
    /// A pending reward for an explicit `rl.triplet_id` of 48 upper-case hex digits joins its triplet.
    fn a_pending_reward_for_an_upper_case_hex_explicit_id_joins(b) {
    let (_d, store) = temp_store_on(b);
    let id = "5B8EFFF798038103D269B633813FC60CEEE19B7EC3C1B174";
    created(store.append_reward_blocking(NewRewardPending::on_triplet(id, 0.8)));
    store.ingest_blocking(prepare(vec![triplet_span(3, 1, "s", &[("rl.triplet_id", s(id))])])).expect("ingest");
    let d = store.read(|tx| tx.triplet(id, &policy())).expect("read").expect("found");
    assert_eq!(d.triplet.effective.reward, Some(0.8));
    assert_eq!(d.ledger.len(), 1);
    assert!(!d.ledger[0].pending);
}
}

conformance! {
    /// A terminal-type reward for one triplet does not complete its sequence; for the sequence it does.
    fn only_a_sequence_targeted_terminal_reward_completes(b) {
    let (_d, store) = temp_store_on(b);
    store.ingest_blocking(prepare(vec![triplet_span(1, 1, "s", &[]), triplet_span(1, 2, "s", &[])])).expect("ingest");
    let first = all_triplets(&store, &policy())[0].triplet_id.clone();
    created(store.append_reward_blocking(on_triplet(&first, 1.0, "tests")));
    let complete = |store: &Store| store.read(|tx| tx.sequence("s", None, 10, &policy())).expect("read").expect("found").summary.complete;
    assert!(!complete(&store));
    let listed = store.read(|tx| tx.sequences(&SequenceFilter { complete: Some(false), ..Default::default() }, None, 10, &policy())).expect("list");
    assert_eq!(listed.items.len(), 1);
    created(store.append_reward_blocking(on_sequence("s", Strategy::Last, Some(1.0), "tests")));
    assert!(complete(&store));
    let listed = store.read(|tx| tx.sequences(&SequenceFilter { complete: Some(true), ..Default::default() }, None, 10, &policy())).expect("list");
    assert_eq!(listed.items.len(), 1);
}
}

conformance! {
    /// "Latest" is ledger order: a reward carried by a span with a clock far in the future does not
    /// outlast a reward appended after it.
    fn latest_is_the_last_appended_whatever_time_a_client_wrote(b) {
    let (_d, store) = temp_store_on(b);
    let mut sp = triplet_span(1, 1, "s", &[("rl.triplet_id", s("t-1"))]);
    sp.events.push(reward_event(0.1, "judge", "triplet", "uniform", u64::MAX / 2));
    store.ingest_blocking(prepare(vec![sp])).expect("ingest");
    assert_eq!(all_triplets(&store, &policy())[0].effective.reward, Some(0.1));
    created(store.append_reward_blocking(on_triplet("t-1", 0.9, "judge")));
    let t = &all_triplets(&store, &policy())[0];
    assert_eq!(t.effective.reward, Some(0.9));
    assert_eq!(t.effective.newest_source.as_deref(), Some("judge"));
}
}

conformance! {
    /// The triplet ids pending rewards wait for are bounded; past the bound a clear refusal, and
    /// room again once a target arrives.
    fn pending_triplet_ids_are_bounded(b) {
    let place = Place::new(b);
    let store = Store::open(StoreConfig { max_pending: 3, ..place.config() }).expect("open");
    for n in 0..3 {
        created(store.append_reward_blocking(NewRewardPending::on_triplet(&format!("p{n}"), 0.5)));
    }
    // The same id again is no new id.
    created(store.append_reward_blocking(NewRewardPending::on_triplet("p0", 0.6)));
    match store.append_reward_blocking(NewRewardPending::on_triplet("p3", 0.5)).expect("answer") {
        RewardAppend::PendingLimit(3) => {}
        other => panic!("expected the pending limit, got {other:?}"),
    }
    store.ingest_blocking(prepare(vec![triplet_span(1, 1, "s", &[("rl.triplet_id", s("p1"))])])).expect("ingest");
    created(store.append_reward_blocking(NewRewardPending::on_triplet("p3", 0.5)));
    // Sequence and task targets wait in the ledger, not in memory: not bounded by it.
    created(store.append_reward_blocking(rltrace_store::NewReward {
        allow_pending: true,
        ..on_sequence("later", Strategy::Uniform, Some(1.0), "hitl")
    }));
    // The bound holds across a restart (the pending ids are reloaded).
    drop(store);
    let store = Store::open(StoreConfig { max_pending: 3, ..place.config() }).expect("reopen");
    assert!(matches!(store.append_reward_blocking(NewRewardPending::on_triplet("p9", 0.5)), Ok(RewardAppend::PendingLimit(3))));
}
}

conformance! {
    /// A read-only store reads beside a live writer and never writes, never creates a file.
    fn read_only_beside_a_live_writer(b) {
    let (place, store) = temp_store_on(b);
    store.ingest_blocking(prepare(vec![triplet_span(1, 1, "s", &[("rl.reward", f(0.5))])])).expect("ingest");
    let ro = place.open_read_only().expect("read-only");
    assert!(ro.is_read_only());
    assert_eq!(all_triplets(&ro, &policy()).len(), 1);
    assert!(matches!(ro.append_reward_blocking(on_triplet("x", 0.1, "hitl")), Err(StoreError::ReadOnly)));
    store.ingest_blocking(prepare(vec![triplet_span(1, 2, "s", &[])])).expect("ingest beside");
    assert_eq!(all_triplets(&ro, &policy()).len(), 2);
    if let Place::Sqlite(dir) = &place {
        let missing = dir.path().join("missing.db");
        assert!(Store::open_read_only(&missing).is_err());
        assert!(!missing.exists());
    }
}
}

/// A full disk is a failure of the store (health says why), not overload; reads go on.
#[test]
fn a_full_database_fails_and_says_why() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(StoreConfig { max_db_bytes: Some(400 * 1024), ..StoreConfig::new(dir.path().join("db")) }).expect("open");
    let mut failed = None;
    for b in 0..200u32 {
        let spans = (0..50).map(|n| triplet_span(b, b * 100 + n, &format!("s{b}"), &[("rl.state.pad", s(&"x".repeat(400)))])).collect();
        match store.ingest_blocking(prepare(spans)) {
            Ok(_) => {}
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    let e = failed.expect("the bound is reached");
    assert!(matches!(e, StoreError::Failed(_)), "{e:?}");
    assert!(e.to_string().contains("full"), "{e}");
    assert!(store.health().expect_err("failing").contains("full"));
    assert!(store.read(|tx| tx.counts()).expect("reads go on").spans > 0);
}

conformance! {
    /// An export reads up to the watermarks taken when it starts, in runs of sequences each in its
    /// own read transaction; the same watermarks give the same lines again.
    fn export_reads_to_its_watermarks_in_runs(b) {
    let (_d, store) = temp_store_on(b);
    let n = rltrace_store::SEQUENCES_PER_READ as u32 * 2 + 10;
    let spans = (0..n).map(|k| triplet_span(k, k, &format!("s{k:04}"), &[("rl.reward", f(0.25))])).collect();
    store.ingest_blocking(prepare(spans)).expect("ingest");
    let mut first = Vec::new();
    let mut injected = false;
    let counts = store
        .export(&TripletFilter::default(), &policy(), None, &mut |t| {
            first.push(t.triplet_id.clone());
            if !injected {
                // Ingest and a reward land while the export runs; it does not see them.
                injected = true;
                store.ingest_blocking(prepare(vec![triplet_span(9999, 99_999, "s0000", &[]), triplet_span(9998, 99_998, "zzz", &[])])).expect("ingest");
                created(store.append_reward_blocking(on_sequence("s0001", Strategy::Uniform, Some(1.0), "hitl")));
            }
            Ok(true)
        })
        .expect("export");
    assert_eq!(first.len(), n as usize);
    assert_eq!(counts.triplets, u64::from(n));
    let as_of = rltrace_store::AsOf { watermarks: counts.watermarks, now: 0 };
    let mut again = Vec::new();
    let mut rewards = Vec::new();
    store
        .export(&TripletFilter::default(), &policy(), Some(as_of), &mut |t| {
            again.push(t.triplet_id.clone());
            rewards.push(t.effective.reward);
            Ok(true)
        })
        .expect("export");
    assert_eq!(again, first);
    assert!(rewards.iter().all(|r| *r == Some(0.25)), "the later reward is past the watermark");
    assert_eq!(all_triplets(&store, &policy()).len(), n as usize + 2);
}
}

conformance! {
    /// The fallback is applied in small batches until no sequence is due.
    fn settling_runs_in_batches_until_none_is_due(b) {
    let (_d, store) = temp_store_on(b);
    let n = rltrace_store::SETTLE_BATCH as u32 + 20;
    store.ingest_blocking(prepare((0..n).map(|k| triplet_span(k, k, &format!("s{k}"), &[])).collect())).expect("ingest");
    created(store.append_reward_blocking(on_sequence("s0", Strategy::Uniform, Some(1.0), "tests")));
    let p = Policy::from_toml("reward_wait = \"1s\"\ndefault_reward = 0.3\n").expect("policy");
    assert_eq!(store.settle_blocking(&p).expect("settle"), n as usize - 1);
    assert_eq!(store.settle_blocking(&p).expect("again"), 0);
    let t = all_triplets(&store, &p);
    assert!(t.iter().filter(|t| t.sequence_id != "s0").all(|t| t.effective.reward == Some(0.3)));
    assert_eq!(store.read(|tx| tx.stats(&p)).expect("stats").rewarded_triplets, u64::from(n));
}
}

conformance! {
    /// A sequence's triplets come in pages, in sequence order, continuing after the last one.
    fn sequence_triplets_are_paged_in_order(b) {
    let (_d, store) = temp_store_on(b);
    store
        .ingest_blocking(prepare((0..7).rev().map(|k| triplet_span(1, k, "s", &[("rl.sequence_index", i(i64::from(k)))])).collect()))
        .expect("ingest");
    let mut cursor = None;
    let mut seen = Vec::new();
    for _ in 0..10 {
        let d = store.read(|tx| tx.sequence("s", cursor, 3, &policy())).expect("read").expect("found");
        assert_eq!(d.summary.triplet_count, 7);
        seen.extend(d.triplets.iter().map(|t| t.sequence_index));
        match d.next {
            Some(n) => cursor = Some(n),
            None => break,
        }
    }
    assert_eq!(seen, (0..7).collect::<Vec<i64>>());
}
}

/// A newer binary migrates a version 1 database forward; the rewards read the same.
#[test]
fn a_version_1_database_is_migrated_forward() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("v1.db");
    {
        let c = rusqlite::Connection::open(&path).expect("open");
        c.execute_batch(include_str!("fixtures/schema_v1.sql")).expect("v1 schema");
        c.execute_batch(
            "INSERT INTO meta(key, value) VALUES ('schema_version', '1');
             INSERT INTO traces(id, trace_id) VALUES (1, x'0000000000000000000000000000000a');
             INSERT INTO sequences(id, sequence_id, triplet_count, first_us, last_us, local_rewards, reward_events, terminal_events)
               VALUES (1, 'task-1', 2, 10, 20, 1, 1, 1);
             INSERT INTO spans(id, trace_ref, span_id, name, kind, start_ns, end_ns, status_code, status_message, attributes, events, scope,
               seq_ref, ts_us, state, action, role, task_id, reward, reward_source)
               VALUES (1, 1, 1, 'a', 1, 10000, 11000, 0, '', '{}', '[]', '', 1, 10, '{}', '{}', 'Code', 'task-1', 0.5, 'local'),
                      (2, 1, 2, 'b', 1, 20000, 21000, 0, '', '{}', '[]', '', 1, 20, '{}', '{}', 'Test', 'task-1', NULL, NULL);
             INSERT INTO tasks(task_id) VALUES ('task-1');
             INSERT INTO reward_events(id, reward_id, target_sequence, strategy, seq_key, value, source, created_us)
               VALUES (1, 'r1', 'task-1', 'last', 'task-1', 1.0, 'tests', 30);
             UPDATE counters SET spans = 2, triplets = 2, sequences = 1, reward_events = 1;",
        )
        .expect("v1 rows");
    }
    let store = Store::open(StoreConfig::new(&path)).expect("migrates");
    let t = all_triplets(&store, &policy());
    assert_eq!(t.iter().map(|t| t.effective.reward).collect::<Vec<_>>(), vec![Some(0.5), Some(1.0)]);
    assert_eq!(store.read(|tx| tx.stats(&policy())).expect("stats").rewarded_triplets, 2);
    let code = store.read(|tx| tx.sequences(&SequenceFilter { role: Some("Test".into()), ..Default::default() }, None, 10, &policy())).expect("list");
    assert_eq!(code.items.len(), 1);
    // Defects by task id find the task after the migration.
    created(store.append_reward_blocking(defect("task-1", "Code")));
    drop(store);
    let c = rusqlite::Connection::open(&path).expect("open");
    let v: String = c.query_row("SELECT value FROM meta WHERE key = 'schema_version'", [], |r| r.get(0)).expect("version");
    assert_eq!(v, rltrace_store::SCHEMA_VERSION.to_string());
}

conformance! {
    /// An older binary refuses a newer database with a clear message and changes nothing.
    fn a_newer_database_is_refused(b) {
    let (place, store) = temp_store_on(b);
    store.ingest_blocking(prepare(vec![triplet_span(1, 1, "s", &[])])).expect("ingest");
    drop(store);
    place.raw("UPDATE meta SET value = '99' WHERE key = 'schema_version'");
    let e = Store::open(place.config()).err().expect("refused");
    assert!(e.to_string().contains("newer"), "{e}");
    let e = place.open_read_only().err().expect("refused");
    assert!(e.to_string().contains("newer"), "{e}");
    // Nothing was changed: the version is still the newer one, the rows still there.
    let (version, spans_left) = match &place {
        Place::Sqlite(dir) => {
            let c = rusqlite::Connection::open(dir.path().join("rltrace.db")).expect("open");
            (
                c.query_row("SELECT value FROM meta WHERE key = 'schema_version'", [], |r| r.get::<_, String>(0)).expect("version"),
                c.query_row("SELECT count(*) FROM spans", [], |r| r.get::<_, i64>(0)).expect("count"),
            )
        }
        Place::Postgres { url, .. } => {
            let mut c = postgres::Client::connect(url, postgres::NoTls).expect("connect");
            (
                c.query_one("SELECT value FROM meta WHERE key = 'schema_version'", &[]).expect("version").get::<_, String>(0),
                c.query_one("SELECT count(*) FROM spans", &[]).expect("count").get::<_, i64>(0),
            )
        }
    };
    assert_eq!((version.as_str(), spans_left), ("99", 1));
}
}

conformance! {
    /// A defect by task id reaches the triplets of its phase: by sequence name and by `state.task_id`.
    fn defects_by_task_id_reach_by_name_and_by_state(b) {
    let (_d, store) = temp_store_on(b);
    store
        .ingest_blocking(prepare(vec![
            triplet_span(1, 1, "T7:Code", &[("rl.state.agent_role", s("Code"))]),
            triplet_span(2, 2, "other", &[("rl.state.agent_role", s("Code")), ("rl.state.task_id", s("T7"))]),
            triplet_span(3, 3, "other", &[("rl.state.agent_role", s("Test")), ("rl.state.task_id", s("T7"))]),
        ]))
        .expect("ingest");
    created(store.append_reward_blocking(defect("T7", "Code")));
    let t = all_triplets(&store, &policy());
    let by_role: Vec<_> = t.iter().map(|t| (t.sequence_id.as_str(), t.role.as_deref(), t.effective.reward)).collect();
    assert!(by_role.contains(&("T7:Code", Some("Code"), Some(0.5))));
    assert!(by_role.contains(&("other", Some("Code"), Some(0.5))));
    assert!(by_role.contains(&("other", Some("Test"), None)));
    assert_eq!(store.read(|tx| tx.stats(&policy())).expect("stats").rewarded_triplets, 2);
    assert!(matches!(store.append_reward_blocking(defect("nope", "Code")), Ok(RewardAppend::NotFound(_))));
}
}

/// A long export does not stop ingest nor let the WAL grow with what arrives meanwhile: it holds
/// no read snapshot longer than one run of sequences, so SQLite checkpoints and reuses the WAL.
#[test]
fn a_long_export_lets_ingest_go_on_and_the_wal_stay_bounded() {
    let (dir, store) = temp_store();
    let pad = "x".repeat(4000);
    let n = rltrace_store::SEQUENCES_PER_READ as u32 * 8;
    for chunk in 0..8u32 {
        let spans = (0..n / 8).map(|k| triplet_span(chunk * n + k, chunk * n + k, &format!("s{chunk}-{k}"), &[("rl.state.pad", s(&pad))])).collect();
        store.ingest_blocking(prepare(spans)).expect("ingest");
    }
    let wal = dir.path().join("rltrace.db-wal");
    let mut written = 0u64;
    let mut peak_wal = 0u64;
    let mut next = 100_000u32;
    let counts = store
        .export(&TripletFilter::default(), &policy(), None, &mut |_| {
            // 5 spans of 4 KB per exported triplet: about 40 MB written while the export runs,
            // 5 MB during each run of sequences.
            let spans = (0..5).map(|k| span(next + k, next + k, &[("pad", s(&pad))])).collect();
            next += 5;
            written += store.ingest_blocking(prepare(spans)).expect("ingest goes on").stored as u64 * 4000;
            peak_wal = peak_wal.max(std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0));
            Ok(true)
        })
        .expect("export");
    assert_eq!(counts.triplets, u64::from(n));
    assert!(written > 40_000_000, "{written}");
    assert!(peak_wal < written / 2, "the WAL grew to {peak_wal} bytes while {written} were written");
}

conformance! {
    /// Pages of one sequence's triplets, with and without a filter, give what the whole sequence
    /// evaluated gives, in order, each triplet once.
    fn triplet_pages_of_a_sequence_match_the_whole_sequence(b) {
    let (_d, store) = temp_store_on(b);
    let spans = (0..40u32)
        .map(|k| {
            let mut attrs = vec![("rl.sequence_index", i(i64::from(k))), ("rl.state.agent_role", s(if k % 4 == 0 { "Code" } else { "Test" }))];
            if k % 5 == 0 {
                attrs.push(("rl.reward", f(0.5)));
            }
            triplet_span(1, k, "long", &attrs)
        })
        .collect();
    store.ingest_blocking(prepare(spans)).expect("ingest");
    created(store.append_reward_blocking(on_sequence("long", Strategy::Role { role: "Code".into() }, Some(0.9), "hitl")));
    created(store.append_reward_blocking(on_sequence("long", Strategy::Discounted { gamma: 0.5 }, Some(1.0), "tests")));
    let whole = all_triplets(&store, &policy());
    for filter in [
        TripletFilter { sequence_id: Some("long".into()), ..Default::default() },
        TripletFilter { sequence_id: Some("long".into()), role: Some("Code".into()), ..Default::default() },
        TripletFilter { sequence_id: Some("long".into()), rewarded: Some(false), ..Default::default() },
    ] {
        let want: Vec<_> = whole.iter().filter(|t| filter.role.as_deref().is_none_or(|r| t.role.as_deref() == Some(r))).filter(|t| filter.rewarded.is_none_or(|r| t.effective.reward.is_some() == r)).collect();
        let mut got = Vec::new();
        let mut cursor = None;
        for _ in 0..100 {
            let page = store.read(|tx| tx.triplets(&filter, cursor, 3, &policy())).expect("page");
            assert!(page.items.len() <= 3);
            got.extend(page.items);
            match page.next {
                Some(n) => cursor = Some(n),
                None => break,
            }
        }
        assert_eq!(got.len(), want.len(), "{filter:?}");
        for (g, w) in got.iter().zip(&want) {
            assert_eq!((&g.triplet_id, &g.effective, &g.state), (&w.triplet_id, &w.effective, &w.state), "{filter:?}");
        }
    }
}
}

/// Triplets sent one write group per call, recorded as `(triplet id, sequence, role)` in the order
/// they arrived.
struct Arrivals {
    list: Vec<(String, String, Option<String>)>,
}

impl Arrivals {
    fn send(&mut self, store: &Store, spans: Vec<rltrace_core::SpanRecord>) {
        for sp in &spans {
            let attr = |k: &str| {
                sp.attributes.iter().find(|(n, _)| n == k).map(|(_, v)| match v {
                    rltrace_core::span::AttrValue::Str(t) => t.clone(),
                    other => panic!("{k} is {other:?}"),
                })
            };
            let Some(seq) = attr("rl.sequence_id") else { continue };
            self.list.push((rltrace_core::ids::default_triplet_id(&sp.trace_id, &sp.span_id), seq, attr("rl.state.agent_role")));
        }
        let n = spans.len();
        assert_eq!(store.ingest_blocking(prepare(spans)).expect("ingest").stored, n);
    }

    /// The triplet ids of `role` in arrival order, of the sequences `keep` accepts.
    fn of(&self, role: &str, keep: impl Fn(&str) -> bool) -> Vec<String> {
        self.list.iter().filter(|(_, q, r)| r.as_deref() == Some(role) && keep(q)).map(|(t, _, _)| t.clone()).collect()
    }
}

/// Every page of `filter` (`limit` triplets each) followed to the end: the triplet ids in order.
fn paged(store: &Store, filter: &TripletFilter, limit: usize) -> Vec<String> {
    let mut got = Vec::new();
    let mut cursor = None;
    for _ in 0..100_000 {
        let page = store.read(|tx| tx.triplets(filter, cursor, limit, &policy())).expect("page");
        assert!(page.items.len() <= limit);
        got.extend(page.items.into_iter().map(|t| t.triplet_id));
        match page.next {
            Some(n) => cursor = Some(n),
            None => return got,
        }
    }
    panic!("pages without end");
}

conformance! {
    /// Triplets by role (no sequence named) come in arrival order across write groups and
    /// sequences, in pages of any size, each once, with the rewarded filter too; one write group
    /// with more triplets of a role than a PostgreSQL posting row holds (`role_spans`, 4,096 ids)
    /// pages the same. Retention deletes whole sequences: their triplets leave the pages, and on
    /// PostgreSQL the posting rows (one shrinks, none is left empty or holds a deleted row).
    fn triplets_by_role_come_in_arrival_order_across_groups_and_retention(b) {
        let (place, store) = temp_store_on(b);
        let role = |r: &str| ("rl.state.agent_role", s(r));
        let mut a = Arrivals { list: Vec::new() };
        // Old sequences (their spans from 2023) share groups with fresh ones.
        a.send(&store, vec![
            triplet_span(1, 1, "old-1", &[role("Code")]),
            triplet_span(1, 2, "old-1", &[role("Test")]),
            fresh(triplet_span(2, 3, "fresh-1", &[role("Code")])),
            fresh(triplet_span(2, 4, "fresh-1", &[role("Code")])),
            fresh(triplet_span(2, 5, "fresh-1", &[])),
        ]);
        a.send(&store, vec![
            fresh(triplet_span(3, 6, "fresh-2", &[role("Test")])),
            fresh(triplet_span(3, 7, "fresh-2", &[role("Code")])),
            triplet_span(1, 8, "old-1", &[role("Code")]),
            fresh(triplet_span(2, 9, "fresh-1", &[role("Code")])),
        ]);
        let big: Vec<_> = (0..4300u32).map(|k| fresh(triplet_span(4, 100 + k, "big", &[role(if k % 50 == 0 { "Test" } else { "Code" })]))).collect();
        a.send(&store, big);
        a.send(&store, vec![
            triplet_span(5, 5000, "old-2", &[role("Code")]),
            fresh(triplet_span(3, 5001, "fresh-2", &[role("Code")])),
            triplet_span(5, 5002, "old-2", &[role("Design")]),
        ]);
        created(store.append_reward_blocking(on_sequence("fresh-2", Strategy::Uniform, Some(1.0), "hitl")));
        let all = |_: &str| true;
        assert!(a.of("Code", all).len() > 4096);
        if let Some(widest) = place.pg_int("SELECT max(cardinality(ids))::bigint FROM role_spans") {
            // The big group's 4,300 rows make two posting rows of Code: the first 4,096 rows
            // less the Test ones among them, and the rest.
            assert_eq!(widest, 4096 - 82, "a posting row spans at most 4,096 row ids");
            assert_eq!(place.pg_int("SELECT count(*) FROM role_spans WHERE role = 'Code'"), Some(5), "one a group, two for the big one");
        }
        let by = |r: &str| TripletFilter { role: Some(r.into()), ..Default::default() };
        for limit in [1000, 4096, 5000] {
            assert_eq!(paged(&store, &by("Code"), limit), a.of("Code", all), "Code, pages of {limit}");
        }
        for limit in [1, 3] {
            assert_eq!(paged(&store, &by("Test"), limit), a.of("Test", all), "Test, pages of {limit}");
        }
        assert_eq!(paged(&store, &by("Design"), 3), a.of("Design", all));
        assert!(paged(&store, &by("Absent"), 3).is_empty());
        let rewarded = TripletFilter { role: Some("Code".into()), rewarded: Some(true), ..Default::default() };
        assert_eq!(paged(&store, &rewarded, 2), a.of("Code", |q| q == "fresh-2"));

        let retention: rltrace_core::retention::Retention = toml::from_str("sequences = \"30d\"\nbatch = 10000").expect("retention");
        let done = store.gc_blocking(&retention, false, |_| {}).expect("gc");
        assert_eq!(done.sequences, 2, "old-1 and old-2");
        let young = |q: &str| !q.starts_with("old-");
        for limit in [1000, 5000] {
            assert_eq!(paged(&store, &by("Code"), limit), a.of("Code", young), "Code after retention, pages of {limit}");
        }
        assert_eq!(paged(&store, &by("Test"), 2), a.of("Test", young));
        assert!(paged(&store, &by("Design"), 2).is_empty(), "old-2's only Design triplet is gone");
        if let Some(links) = place.pg_int("SELECT count(*) FROM sequence_roles r WHERE NOT EXISTS (SELECT 1 FROM sequences q WHERE q.id = r.seq_ref)") {
            assert_eq!(links, 0, "the deleted sequences' role links are gone");
            let kept = place.pg_int("SELECT count(*) FROM sequence_roles").expect("pg");
            let expected = place.pg_int("SELECT count(*) FROM (SELECT DISTINCT role, seq_ref FROM spans WHERE role IS NOT NULL AND seq_ref IS NOT NULL) d").expect("pg");
            assert_eq!(kept, expected, "every link of a kept sequence is kept");
        }
        if let Some(dead) = place.pg_int("SELECT count(*) FROM role_spans r, unnest(r.ids) u(id) WHERE NOT EXISTS (SELECT 1 FROM spans s WHERE s.id = u.id)") {
            assert_eq!(dead, 0, "no posting row holds a deleted span row");
            let empty = place.pg_int("SELECT count(*) FROM role_spans WHERE cardinality(ids) = 0").expect("pg");
            assert_eq!(empty, 0);
            let design = place.pg_int("SELECT count(*) FROM role_spans WHERE role = 'Design'").expect("pg");
            assert_eq!(design, 0, "the posting row of the deleted Design triplet is gone");
            let live = place.pg_int("SELECT count(*) FROM role_spans r, unnest(r.ids) u(id)").expect("pg");
            assert_eq!(live, (a.of("Code", young).len() + a.of("Test", young).len()) as i64);
        }
    }
}

conformance! {
    /// A database of schema version 5 (PostgreSQL: triplets by role in the index `spans_role`)
    /// is migrated forward at start: the pages by role are what they were, and triplets stored
    /// after the migration follow the older ones.
    fn a_version_5_database_keeps_its_triplets_by_role(b) {
        let (place, store) = temp_store_on(b);
        let role = |r: &str| ("rl.state.agent_role", s(r));
        let mut a = Arrivals { list: Vec::new() };
        for n in 0..3u32 {
            a.send(&store, vec![
                triplet_span(n, 10 * n, &format!("s-{n}"), &[role("Code")]),
                triplet_span(9, 10 * n + 1, "shared", &[role(if n == 1 { "Test" } else { "Code" })]),
            ]);
        }
        drop(store);
        if let Place::Postgres { .. } = place {
            place.raw(
                "DROP TABLE role_spans;
                 CREATE INDEX spans_role ON spans(role, id) WHERE seq_ref IS NOT NULL AND role IS NOT NULL;
                 CREATE INDEX sequence_roles_seq ON sequence_roles(seq_ref);",
            );
        }
        place.raw("UPDATE meta SET value = '5' WHERE key = 'schema_version'");
        let store = place.open();
        let by = |r: &str| TripletFilter { role: Some(r.into()), ..Default::default() };
        assert_eq!(paged(&store, &by("Code"), 2), a.of("Code", |_| true));
        a.send(&store, vec![triplet_span(0, 500, "s-0", &[role("Code")]), triplet_span(9, 501, "shared", &[role("Test")])]);
        assert_eq!(paged(&store, &by("Code"), 2), a.of("Code", |_| true));
        assert_eq!(paged(&store, &by("Test"), 1), a.of("Test", |_| true));
        if let Some(n) = place.pg_int("SELECT count(*) FROM pg_indexes WHERE indexname = 'spans_role'") {
            assert_eq!(n, 0, "the index is dropped");
        }
        if let Some(n) = place.pg_int("SELECT count(*) FROM pg_indexes WHERE indexname = 'sequence_roles_seq'") {
            assert_eq!(n, 0, "version 7 drops the role links' index by sequence");
        }
    }
}

conformance! {
    /// The sample the what-if and the overview read: the newest sequences first, by role when asked,
    /// within the bounds on sequences and triplets (a sequence longer than the triplet bound is passed
    /// over and counted), or one sequence by name; each with all its rows and the events reaching it.
    fn recent_sequences_are_newest_first_within_their_bounds(b) {
    let (_d, store) = temp_store_on(b);
    for seq in 0..6u32 {
        let role = if seq % 2 == 0 { "Code" } else { "Test" };
        let n = if seq == 4 { 5 } else { 2 };
        let spans = (0..n).map(|k| triplet_span(10 + seq, k, &format!("r-{seq}"), &[("rl.state.agent_role", s(role))])).collect();
        store.ingest_blocking(prepare(spans)).expect("ingest");
    }
    created(store.append_reward_blocking(on_sequence("r-5", Strategy::Uniform, Some(1.0), "hitl")));
    let names = |f: &SequenceFilter, limit: usize, max: usize| {
        let sample = store.read(|tx| tx.recent_sequences(f, None, limit, max)).expect("read");
        let names: Vec<String> = sample.sequences.iter().map(|q| q.sequence_id.clone()).collect();
        (names, sample.skipped_long, sample.bounded)
    };
    let all = SequenceFilter::default();
    assert_eq!(names(&all, 100, 100), (vec!["r-5", "r-4", "r-3", "r-2", "r-1", "r-0"].into_iter().map(String::from).collect(), 0, false));
    assert_eq!(names(&all, 2, 100), (vec!["r-5".to_string(), "r-4".to_string()], 0, true), "the sequence bound");
    assert_eq!(names(&all, 100, 4), (vec!["r-5".to_string(), "r-3".to_string()], 1, true), "r-4 (5 triplets) is over the triplet bound alone; r-2 would pass it");
    let code = SequenceFilter { role: Some("Code".into()), ..SequenceFilter::default() };
    assert_eq!(names(&code, 100, 100).0, vec!["r-4", "r-2", "r-0"]);
    let one = store.read(|tx| tx.recent_sequences(&all, Some("r-5"), 100, 100)).expect("read");
    assert_eq!(one.sequences.len(), 1);
    assert_eq!(one.sequences[0].rows.len(), 2);
    assert_eq!(one.sequences[0].events.len(), 1, "the sequence reward reaching it");
    assert!(store.read(|tx| tx.recent_sequences(&all, Some("absent"), 100, 100)).expect("read").sequences.is_empty());
}
}

conformance! {
    /// Partial success, span by span: in one batch, a span stored before (an exporter retrying a
    /// trace split over two batches), a new span of that old trace, the same span twice, an
    /// explicit triplet id held by a stored span or by one earlier in the batch, and a NUL in a
    /// span's name: each is answered, the rest is stored, and a sequence made for refused spans
    /// alone is not kept.
    fn a_batch_is_stored_span_by_span_with_duplicates_and_refusals(b) {
        let (_d, store) = temp_store_on(b);
        let first = store
            .ingest_blocking(prepare(vec![triplet_span(1, 1, "s", &[("rl.triplet_id", s("tid-1"))]), triplet_span(1, 2, "s", &[])]))
            .expect("first");
        assert_eq!((first.stored, first.duplicates, first.rejected.len()), (2, 0, 0));
        let mut nul = triplet_span(3, 9, "s", &[]);
        nul.name = "bad\0name".into();
        let mut nul_new = triplet_span(3, 10, "new-seq", &[]);
        nul_new.name = "bad\0name".into();
        let out = store
            .ingest_blocking(prepare(vec![
                triplet_span(1, 2, "s", &[]),
                triplet_span(1, 3, "s", &[]),
                triplet_span(1, 3, "s", &[]),
                triplet_span(2, 4, "other", &[("rl.triplet_id", s("tid-1"))]),
                triplet_span(2, 5, "s", &[("rl.triplet_id", s("tid-2"))]),
                triplet_span(2, 6, "lonely", &[("rl.triplet_id", s("tid-2"))]),
                nul,
                nul_new,
                triplet_span(3, 11, "bad\0seq", &[]),
                triplet_span(3, 12, "s", &[("rl.triplet_id", s("bad\0id"))]),
            ]))
            .expect("second");
        assert_eq!((out.stored, out.duplicates, out.rejected.len()), (2, 2, 6), "{out:?}");
        assert_eq!(out.rejected.iter().filter(|m| m.contains("contains a NUL character")).count(), 4, "{out:?}");
        assert_eq!(out.rejected.iter().filter(|m| m.contains("is already used by another span")).count(), 2, "{out:?}");
        assert!(out.rejected.iter().any(|m| m.contains("name contains a NUL character")), "{out:?}");
        let c = store.read(|tx| tx.counts()).expect("counts");
        assert_eq!((c.spans, c.triplets, c.sequences), (4, 4, 1));
        let seqs = store.read(|tx| tx.sequences(&SequenceFilter::default(), None, 10, &policy())).expect("list");
        assert_eq!(seqs.items.iter().map(|s| s.sequence_id.as_str()).collect::<Vec<_>>(), vec!["s"]);
        assert_eq!(seqs.items[0].triplet_count, 4);
        // The refused ids are free for their own spans later... and the held ones stay held.
        let again = store.ingest_blocking(prepare(vec![triplet_span(2, 6, "lonely", &[("rl.triplet_id", s("tid-3"))])])).expect("third");
        assert_eq!(again.stored, 1, "{again:?}");
    }
}

conformance! {
    /// A sequence is linked to the Agent Lightning rollout attempt that one of its spans names
    /// (`agentlightning.rollout_id` and `agentlightning.attempt_id`), or its resource does; the
    /// first link stays; a span with only one of the two links nothing.
    fn a_sequence_is_linked_to_the_rollout_its_spans_or_their_resource_name(b) {
        let (_d, store) = temp_store_on(b);
        let link = |seq: &str| store.read(|tx| tx.sequence(seq, None, 10, &policy())).expect("read").expect("found").summary.rollout;
        let on_span = |n: u32, seq: &str, r: &str| {
            triplet_span(n, n, seq, &[("agentlightning.rollout_id", s(r)), ("agentlightning.attempt_id", s(&format!("{r}-a1")))])
        };
        store.ingest_blocking(prepare(vec![triplet_span(1, 1, "by-span", &[]), on_span(2, "by-span", "ro-1")])).expect("ingest");
        store.ingest_blocking(prepare(vec![on_span(3, "by-span", "ro-2")])).expect("ingest");
        let l = link("by-span").expect("linked");
        assert_eq!((l.rollout_id.as_str(), l.attempt_id.as_str()), ("ro-1", "ro-1-a1"));

        let mut res = triplet_span(4, 4, "by-resource", &[]);
        res.origin = std::sync::Arc::new(rltrace_core::span::Origin {
            resource: vec![("agentlightning.rollout_id".into(), s("ro-9")), ("agentlightning.attempt_id".into(), s("at-9"))],
            ..rltrace_core::span::Origin::default()
        });
        store.ingest_blocking(prepare(vec![res])).expect("ingest");
        let l = link("by-resource").expect("linked");
        assert_eq!((l.rollout_id.as_str(), l.attempt_id.as_str()), ("ro-9", "at-9"));

        store.ingest_blocking(prepare(vec![triplet_span(5, 5, "half", &[("agentlightning.rollout_id", s("ro-5"))])])).expect("ingest");
        assert_eq!(link("half"), None);
        let listed = store.read(|tx| tx.sequences(&SequenceFilter::default(), None, 10, &policy())).expect("list");
        assert_eq!(listed.items.iter().filter(|s| s.rollout.is_some()).count(), 2);
    }
}

conformance! {
    /// A database of schema version 2 (before rollout links) is migrated forward at start, its
    /// rows kept; a newer binary's database is refused (`a_newer_database_is_refused`).
    fn a_version_2_database_is_migrated_forward(b) {
        let (place, store) = temp_store_on(b);
        store.ingest_blocking(prepare(vec![triplet_span(1, 1, "old", &[("rl.reward", f(0.5))])])).expect("ingest");
        created(store.append_reward_blocking(on_sequence("old", Strategy::Uniform, Some(1.0), "tests")));
        drop(store);
        // Version 2 is version 3 without the rollout columns and their index.
        place.raw(
            "DROP INDEX sequences_rollout; ALTER TABLE sequences DROP COLUMN rollout_id; ALTER TABLE sequences DROP COLUMN attempt_id;
             DROP TABLE forward_cursors; DROP TABLE agl_outbox; ALTER TABLE spans DROP COLUMN extras;
             UPDATE meta SET value = '2' WHERE key = 'schema_version'",
        );
        let store = place.open();
        let old = store.read(|tx| tx.sequence("old", None, 10, &policy())).expect("read").expect("kept");
        assert_eq!(old.triplets.len(), 1);
        assert_eq!(old.ledger.len(), 1);
        assert_eq!(old.summary.rollout, None);
        store
            .ingest_blocking(prepare(vec![triplet_span(2, 2, "old", &[("agentlightning.rollout_id", s("r")), ("agentlightning.attempt_id", s("a"))])]))
            .expect("ingest after the migration");
        let old = store.read(|tx| tx.sequence("old", None, 10, &policy())).expect("read").expect("kept");
        assert_eq!(old.summary.rollout.map(|l| l.rollout_id), Some("r".to_string()));
        drop(store);
        let ro = place.open_read_only().expect("the migrated database is readable as it is");
        assert_eq!(ro.read(|tx| tx.counts()).expect("counts").spans, 2);
    }
}

/// Now, in nanoseconds since the epoch.
fn now_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_nanos() as u64
}

/// A span that ended just now.
fn fresh(mut sp: rltrace_core::SpanRecord) -> rltrace_core::SpanRecord {
    sp.start_time_unix_nano = now_ns() - 1_000_000;
    sp.end_time_unix_nano = now_ns();
    sp
}

conformance! {
    /// Retention deletes old plain spans and whole old sequences, in passes of `batch`, with the
    /// counters; a sequence with a recent reward event and a young one stay; a deleted
    /// sequence's id can be used again; a dry run counts the same and deletes nothing.
    fn retention_deletes_what_is_due_and_keeps_the_rest(b) {
        let (_place, store) = temp_store_on(b);
        let mut spans = vec![
            triplet_span(1, 1, "old", &[]),
            triplet_span(1, 2, "old", &[("rl.reward", f(0.5))]),
            triplet_span(2, 3, "rewarded", &[]),
            fresh(triplet_span(3, 4, "young", &[])),
        ];
        for n in 0..5 {
            spans.push(span(4, 10 + n, &[("http.method", s("GET"))]));
        }
        spans.push(fresh(span(5, 20, &[("http.method", s("POST"))])));
        store.ingest_blocking(prepare(spans)).expect("ingest");
        created(store.append_reward_blocking(on_sequence("rewarded", Strategy::Uniform, Some(1.0), "tests")));
        created(store.append_reward_blocking(on_sequence("old", Strategy::Uniform, Some(0.2), "tests")));
        // The event on "old" is recent too: make it old, as if appended long ago.
        _place.raw("UPDATE reward_events SET created_us = 1700000000000000 WHERE target_sequence = 'old'");
        let before = store.read(|tx| tx.counts()).expect("counts");
        let retention: rltrace_core::retention::Retention = toml::from_str("spans = \"30d\"\nsequences = \"30d\"\nbatch = 2").expect("retention");
        let due = store.read(|tx| tx.gc_due(&retention, false)).expect("due");
        assert_eq!((due.spans, due.sequences, due.triplets, due.reward_events), (5, 1, 2, 1));
        assert_eq!(store.read(|tx| tx.counts()).expect("counts"), before, "a dry run deletes nothing");

        let mut passes = Vec::new();
        let done = store.gc_blocking(&retention, false, |n| passes.push(*n)).expect("gc");
        assert!(passes.len() >= 3, "batches of 2 rows: {passes:?}");
        assert!(passes.iter().all(|p| p.spans <= 2 && p.triplets <= 2), "no pass over its batch: {passes:?}");
        assert_eq!((done.spans, done.sequences, done.triplets, done.reward_events, done.more), (5, 1, 2, 1, false));
        let after = store.read(|tx| tx.counts()).expect("counts");
        assert_eq!(after.spans, before.spans - 7);
        assert_eq!(after.triplets, before.triplets - 2);
        assert_eq!(after.sequences, before.sequences - 1);
        assert_eq!(after.reward_events, before.reward_events - 1);
        assert!(store.read(|tx| tx.sequence("old", None, 10, &policy())).expect("read").is_none());
        for kept in ["rewarded", "young"] {
            assert!(store.read(|tx| tx.sequence(kept, None, 10, &policy())).expect("read").is_some(), "{kept} is kept");
        }
        let again = store.gc_blocking(&retention, false, |_| {}).expect("gc again");
        assert_eq!((again.spans, again.sequences), (0, 0), "nothing is due twice");

        // The id of a deleted sequence starts a new one.
        store.ingest_blocking(prepare(vec![fresh(triplet_span(6, 30, "old", &[]))])).expect("ingest again");
        let old = store.read(|tx| tx.sequence("old", None, 10, &policy())).expect("read").expect("new sequence");
        assert_eq!(old.triplets.len(), 1);
        assert_eq!(old.ledger.len(), 0, "the old ledger went with the old sequence");
        assert_eq!(store.read(|tx| tx.counts()).expect("counts").sequences, after.sequences + 1);
    }
}

conformance! {
    /// Under a policy with a fallback reward, a sequence the fallback has not settled is waiting
    /// for its reward: retention keeps it until it is settled.
    fn retention_keeps_sequences_waiting_for_their_fallback(b) {
        let (_place, store) = temp_store_on(b);
        store.ingest_blocking(prepare(vec![triplet_span(1, 1, "waiting", &[])])).expect("ingest");
        let fallback = Policy::from_toml("default_reward = 0.1\nreward_wait = \"1h\"").expect("policy");
        let retention: rltrace_core::retention::Retention = toml::from_str("sequences = \"30d\"").expect("retention");
        assert_eq!(store.gc_blocking(&retention, fallback.default_reward.is_some(), |_| {}).expect("gc").sequences, 0);
        assert!(store.read(|tx| tx.sequence("waiting", None, 10, &fallback)).expect("read").is_some());
        assert_eq!(store.settle_blocking(&fallback).expect("settle"), 1);
        // The fallback event itself is new: only once it too is old is the sequence due.
        _place.raw("UPDATE reward_events SET created_us = 1700000000000000");
        assert_eq!(store.gc_blocking(&retention, fallback.default_reward.is_some(), |_| {}).expect("gc").sequences, 1);
        assert!(store.read(|tx| tx.sequence("waiting", None, 10, &fallback)).expect("read").is_none());
    }
}

conformance! {
    /// A defect by task id reaches a sequence by its name (`T:7` by task `T`): a recent one keeps
    /// the old sequence; once it is old too, the sequence goes.
    fn retention_keeps_a_sequence_a_recent_defect_reaches_by_name(b) {
        let (place, store) = temp_store_on(b);
        store.ingest_blocking(prepare(vec![triplet_span(1, 1, "T:7", &[("rl.state.agent_role", s("Code"))])])).expect("ingest");
        created(store.append_reward_blocking(defect("T", "Code")));
        let retention: rltrace_core::retention::Retention = toml::from_str("sequences = \"30d\"").expect("retention");
        assert_eq!(store.read(|tx| tx.gc_due(&retention, false)).expect("due").sequences, 0);
        assert_eq!(store.gc_blocking(&retention, false, |_| {}).expect("gc").sequences, 0);
        assert!(store.read(|tx| tx.sequence("T:7", None, 10, &policy())).expect("read").is_some());
        place.raw("UPDATE reward_events SET created_us = 1700000000000000");
        assert_eq!(store.gc_blocking(&retention, false, |_| {}).expect("gc").sequences, 1);
    }
}

conformance! {
    /// A plain span that ends in the future does not stop the walk for good (it is kept), and
    /// spans stored after the newest ones were deleted are walked too.
    fn retention_walks_past_future_spans_and_finds_later_ones(b) {
        let (_place, store) = temp_store_on(b);
        let mut future = span(1, 1, &[("http.method", s("GET"))]);
        future.start_time_unix_nano = now_ns() + 10 * 86_400 * 1_000_000_000;
        future.end_time_unix_nano = future.start_time_unix_nano + 1;
        store.ingest_blocking(prepare(vec![future, span(1, 2, &[("http.method", s("GET"))]), span(1, 3, &[("http.method", s("GET"))])])).expect("ingest");
        let retention: rltrace_core::retention::Retention = toml::from_str("spans = \"30d\"").expect("retention");
        assert_eq!(store.gc_blocking(&retention, false, |_| {}).expect("gc").spans, 2, "the two old ones behind the future one");
        assert_eq!(store.read(|tx| tx.counts()).expect("counts").spans, 1, "the future one is kept");
        store.ingest_blocking(prepare(vec![span(2, 4, &[("http.method", s("GET"))])])).expect("ingest later");
        assert_eq!(store.gc_blocking(&retention, false, |_| {}).expect("gc").spans, 1, "a span stored after the deletion is walked");
    }
}

conformance! {
    /// Spans come back for forwarding as they were received (ids, attributes in order with their
    /// types, bytes included, events with exact times, links, trace state, flags, dropped counts,
    /// resource, scope and version), in arrival order, a batch at a time; a `triplets` read steps
    /// over plain spans.
    fn spans_come_back_for_forwarding_as_received(b) {
        use rltrace_core::span::{AttrValue, Origin, SpanEvent, SpanExtras, SpanLink};
        let (_d, store) = temp_store_on(b);
        let origin = std::sync::Arc::new(Origin {
            resource: vec![("service.name".into(), s("agents")), ("deployment".into(), i(3))],
            scope_name: "rltrace-test".into(),
            scope_version: "1.2.3".into(),
        });
        let mut rich = span(
            1,
            1,
            &[
                ("z.first", s("one")),
                ("a.int", i(-4)),
                ("blob", AttrValue::Bytes(vec![0, 0xab, 0xff])),
                ("hexlike", s("00abff")),
                ("m.double", f(1.0)),
                ("arr", AttrValue::Array(vec![AttrValue::Bool(true), i(2)])),
            ],
        );
        rich.origin = origin.clone();
        rich.parent_span_id = Some([9; 8]);
        rich.status_code = 2;
        rich.status_message = "failed".into();
        rich.events = vec![SpanEvent { name: "e".into(), time_unix_nano: 1_700_000_000_000_000_123, attributes: vec![("k".into(), s("v"))] }];
        rich.extras = SpanExtras {
            links: vec![SpanLink { trace_id: vec![7; 16], span_id: vec![8; 8], trace_state: "x=y".into(), attributes: vec![("l".into(), i(1))], flags: 1 }],
            trace_state: "vendor=abc".into(),
            flags: 257,
            event_times: Vec::new(),
            dropped: [1, 2, 3],
        };
        let mut plain = span(1, 2, &[]);
        plain.events = vec![SpanEvent { name: "whole".into(), time_unix_nano: 1_700_000_000_000_001_000, attributes: Vec::new() }];
        let trip = triplet_span(2, 3, "seq", &[]);
        store.ingest_blocking(prepare(vec![rich.clone(), plain.clone(), trip.clone()])).expect("ingest");
        let b1 = store.read(|tx| tx.forward_batch(0, 2, false)).expect("read");
        assert_eq!(b1.spans.len(), 2);
        assert_eq!(b1.last_id, b1.spans[0].id + 2);
        assert_eq!(b1.scanned_to, b1.spans[1].id, "a full batch ends at its last row");
        let mut expected_rich = rich.clone();
        expected_rich.extras.event_times = vec![1_700_000_000_000_000_123];
        assert_eq!(b1.spans[0].span, expected_rich);
        assert_eq!(b1.spans[1].span, plain);
        assert!(b1.spans[0].id < b1.spans[1].id);
        let b2 = store.read(|tx| tx.forward_batch(b1.scanned_to, 2, false)).expect("read");
        assert_eq!(b2.spans.len(), 1);
        assert_eq!(b2.spans[0].span.trace_id, trip.trace_id);
        assert_eq!(b2.scanned_to, b2.last_id);
        let b3 = store.read(|tx| tx.forward_batch(b2.scanned_to, 2, false)).expect("read");
        assert!(b3.spans.is_empty());
        assert_eq!(b3.scanned_to, b2.scanned_to, "nothing after the newest row");
        let t = store.read(|tx| tx.forward_batch(0, 10, true)).expect("read");
        assert_eq!(t.spans.len(), 1, "only the triplet");
        assert_eq!(t.spans[0].span.span_id, trip.span_id);
        // A run of plain spans longer than a triplet read looks at is stepped over in parts.
        store.ingest_blocking(prepare((10..60).map(|n| span(3, n, &[])).collect())).expect("ingest");
        let mut after = t.scanned_to;
        let mut reads = 0;
        loop {
            let r = store.read(|tx| tx.forward_batch(after, 1, true)).expect("read");
            assert!(r.spans.is_empty());
            reads += 1;
            if r.scanned_to == after {
                break;
            }
            assert!(r.scanned_to - after <= 16, "at most 16 rows per read of batch 1");
            after = r.scanned_to;
        }
        assert!(reads >= 4, "50 rows in reads of 16");
        assert_eq!(after, store.read(|tx| tx.last_span_id()).expect("last"));
    }
}

conformance! {
    /// A forwarding cursor is durable and leased: one collector at a time moves it, only from
    /// where it left it; a released or expired lease is taken over with the cursor where it was;
    /// a new target starts at the beginning or, when asked, at the newest span.
    fn forwarding_cursors_are_leased_and_durable(b) {
        use rltrace_store::CursorOp;
        let (place, store) = temp_store_on(b);
        store.ingest_blocking(prepare((0..5).map(|n| span(1, n, &[])).collect())).expect("ingest");
        let last = store.read(|tx| tx.last_span_id()).expect("last");
        let lease = 60_000_000;
        let claim = CursorOp::Claim { from_now: false };
        assert_eq!(store.cursor_blocking("t", "a", lease, claim.clone()).expect("claim"), Some(0));
        assert_eq!(store.cursor_blocking("t", "b", lease, claim.clone()).expect("claim"), None, "a holds it");
        assert_eq!(store.cursor_blocking("t", "b", lease, CursorOp::Advance { from: 0, to: 3 }).expect("advance"), None);
        assert_eq!(store.cursor_blocking("t", "a", lease, CursorOp::Advance { from: 1, to: 3 }).expect("advance"), None, "not from where it is");
        assert_eq!(store.cursor_blocking("t", "a", lease, CursorOp::Advance { from: 0, to: 3 }).expect("advance"), Some(3));
        assert_eq!(store.cursor_blocking("now", "a", lease, CursorOp::Claim { from_now: true }).expect("claim"), Some(last));
        drop(store);
        let store = place.open();
        let cursors = store.read(|tx| tx.forward_cursors()).expect("cursors");
        assert_eq!(cursors.len(), 2);
        let (name, c) = &cursors[1];
        assert_eq!((name.as_str(), c.after_id, c.owner.as_deref()), ("t", 3, Some("a")));
        assert!(c.updated_us > 0);
        assert_eq!(store.cursor_blocking("t", "b", lease, claim.clone()).expect("claim"), None, "the lease outlived the restart");
        assert_eq!(store.cursor_blocking("t", "a", lease, CursorOp::Release).expect("release"), Some(3));
        assert_eq!(store.cursor_blocking("t", "b", lease, claim.clone()).expect("claim"), Some(3), "taken over where it was");
        // An expired lease is taken over too.
        assert_eq!(store.cursor_blocking("x", "a", 0, claim.clone()).expect("claim"), Some(0));
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert_eq!(store.cursor_blocking("x", "b", lease, claim).expect("claim"), Some(0));
    }
}

conformance! {
    /// The Agent Lightning bridge's outbox: linked sequences come back evaluated, with the trace
    /// and end of their last LLM call, until the bridge writes a delivery for them; one delivery
    /// per sequence and bridge; a failed attempt stays pending with its error, a delivered or
    /// skipped one leaves the pending list; all of it survives a restart.
    fn the_bridge_outbox_holds_one_delivery_per_sequence_durably(b) {
        use rltrace_core::sequence::EpisodeReward;
        use rltrace_store::{Outcome, OutboxOp};
        let (place, store) = temp_store_on(b);
        let link = |r: &str| vec![("agentlightning.rollout_id", s(r)), ("agentlightning.attempt_id", s("at-1"))];
        let mut llm = triplet_span(1, 2, "linked", &[("gen_ai.operation.name", s("chat")), ("rl.reward", f(0.25))]);
        llm.attributes.extend(link("ro-1").into_iter().map(|(k, v)| (k.to_string(), v)));
        // The plain triplet ends later, but the LLM call is the anchor.
        let mut later = triplet_span(1, 3, "linked", &link("ro-1"));
        later.end_time_unix_nano += 10_000_000;
        let unlinked = triplet_span(2, 1, "unlinked", &[]);
        store.ingest_blocking(prepare(vec![llm.clone(), later, unlinked])).expect("ingest");
        let scan = store.read(|tx| tx.linked_sequences("agl", rltrace_store::Deliveries::Once, 0, 10, &policy())).expect("scan");
        assert_eq!(scan.sequences.len(), 1);
        let seq = &scan.sequences[0];
        assert_eq!((seq.sequence_id.as_str(), seq.rollout.rollout_id.as_str(), seq.rollout.attempt_id.as_str()), ("linked", "ro-1", "at-1"));
        assert_eq!(seq.anchor, Some((llm.trace_id, i64::try_from(llm.end_time_unix_nano).expect("ns"))));
        assert_eq!(seq.eval.triplets.len(), 2);
        assert_eq!(seq.eval.episode_reward(EpisodeReward::Min), Some(0.25));
        assert_eq!(scan.scanned_to, scan.last_id);
        let enqueue = |bridge: &str, value: f64| OutboxOp::Enqueue {
            deliveries: rltrace_store::Deliveries::Once,
            reason: "episode".into(),
            bridge: bridge.into(),
            seq_ref: seq.seq_ref,
            rollout: seq.rollout.clone(),
            value,
            trace_id: llm.trace_id,
            start_ns: 5,
        };
        let id = store.outbox_blocking(enqueue("agl", 0.25)).expect("enqueue").expect("new row");
        assert_eq!(store.outbox_blocking(enqueue("agl", 0.75)).expect("enqueue"), None, "one per sequence");
        assert!(store.read(|tx| tx.linked_sequences("agl", rltrace_store::Deliveries::Once, 0, 10, &policy())).expect("scan").sequences.is_empty());
        assert_eq!(store.read(|tx| tx.linked_sequences("other", rltrace_store::Deliveries::Once, 0, 10, &policy())).expect("scan").sequences.len(), 1, "per bridge");
        let failed = OutboxOp::Attempted { id, outcome: Outcome::Failed("connection refused".into()) };
        assert_eq!(store.outbox_blocking(failed).expect("attempt"), Some(id));
        drop(store);
        let store = place.open();
        let pending = store.read(|tx| tx.outbox_pending("agl", 10)).expect("pending");
        assert_eq!(pending.len(), 1);
        assert_eq!((pending[0].id, pending[0].value, pending[0].attempts, pending[0].start_ns), (id, 0.25, 1, 5));
        assert_eq!(pending[0].trace_id, llm.trace_id);
        let counts = store.read(|tx| tx.outbox_counts("agl")).expect("counts");
        assert_eq!((counts.pending, counts.delivered, counts.skipped), (1, 0, 0));
        assert!(counts.oldest_pending_us.is_some());
        assert_eq!(store.outbox_blocking(OutboxOp::Attempted { id, outcome: Outcome::Delivered }).expect("attempt"), Some(id));
        assert_eq!(store.outbox_blocking(OutboxOp::Attempted { id, outcome: Outcome::Failed("late".into()) }).expect("attempt"), None, "no longer pending");
        let other = store.outbox_blocking(enqueue("other", 0.5)).expect("enqueue").expect("new");
        store.outbox_blocking(OutboxOp::Attempted { id: other, outcome: Outcome::Skipped("unknown rollout".into()) }).expect("attempt");
        assert!(store.read(|tx| tx.outbox_pending("agl", 10)).expect("pending").is_empty());
        let counts = store.read(|tx| tx.outbox_counts("agl")).expect("counts");
        assert_eq!((counts.pending, counts.delivered, counts.skipped, counts.oldest_pending_us), (0, 1, 0, None));
        let counts = store.read(|tx| tx.outbox_counts("other")).expect("counts");
        assert_eq!((counts.pending, counts.delivered, counts.skipped), (0, 0, 1));
    }
}

conformance! {
    /// Retention takes a deleted sequence's finished Agent Lightning deliveries with it and leaves
    /// a pending one, which carries what it needs, to be delivered.
    fn retention_takes_finished_deliveries_and_leaves_pending_ones(b) {
        use rltrace_store::{Outcome, OutboxOp};
        let (_place, store) = temp_store_on(b);
        let link = [("agentlightning.rollout_id", s("ro-old")), ("agentlightning.attempt_id", s("at-1"))];
        store.ingest_blocking(prepare(vec![triplet_span(1, 1, "old", &link)])).expect("ingest");
        let seq = store.read(|tx| tx.linked_sequences("a", rltrace_store::Deliveries::Once, 0, 10, &policy())).expect("scan").sequences.remove(0);
        let enqueue = |bridge: &str| OutboxOp::Enqueue {
            deliveries: rltrace_store::Deliveries::Once,
            reason: "episode".into(),
            bridge: bridge.into(),
            seq_ref: seq.seq_ref,
            rollout: seq.rollout.clone(),
            value: 0.5,
            trace_id: [1; 16],
            start_ns: 1,
        };
        let delivered = store.outbox_blocking(enqueue("a")).expect("enqueue").expect("row");
        store.outbox_blocking(OutboxOp::Attempted { id: delivered, outcome: Outcome::Delivered }).expect("attempt");
        store.outbox_blocking(enqueue("b")).expect("enqueue").expect("row");
        let retention: rltrace_core::retention::Retention = toml::from_str("sequences = \"30d\"").expect("retention");
        assert_eq!(store.gc_blocking(&retention, false, |_| {}).expect("gc").sequences, 1);
        let a = store.read(|tx| tx.outbox_counts("a")).expect("counts");
        assert_eq!((a.pending, a.delivered, a.skipped), (0, 0, 0), "the delivered row went with the sequence");
        let pending = store.read(|tx| tx.outbox_pending("b", 10)).expect("pending");
        assert_eq!(pending.len(), 1, "the pending one stays");
        assert_eq!(pending[0].rollout.rollout_id, "ro-old");
        // A new linked sequence (SQLite may give it the deleted one's row id) is not taken for it.
        let fresh_link = [("agentlightning.rollout_id", s("ro-new")), ("agentlightning.attempt_id", s("at-1"))];
        store.ingest_blocking(prepare(vec![fresh(triplet_span(2, 2, "new", &fresh_link))])).expect("ingest");
        let scan = store.read(|tx| tx.linked_sequences("b", rltrace_store::Deliveries::Once, 0, 10, &policy())).expect("scan");
        assert_eq!(scan.sequences.iter().map(|q| q.sequence_id.as_str()).collect::<Vec<_>>(), ["new"]);
    }
}

conformance! {
    /// Retention that deletes the newest span rows moves a forwarding cursor past them back to
    /// the newest row left, so spans stored afterwards are forwarded even where SQLite gives
    /// their ids again.
    fn retention_of_the_newest_spans_rewinds_a_cursor_past_them(b) {
        use rltrace_store::CursorOp;
        let (_place, store) = temp_store_on(b);
        store.ingest_blocking(prepare((0..4).map(|n| span(1, n, &[])).collect())).expect("ingest");
        let last = store.read(|tx| tx.last_span_id()).expect("last");
        let lease = 60_000_000;
        assert_eq!(store.cursor_blocking("t", "a", lease, CursorOp::Claim { from_now: true }).expect("claim"), Some(last));
        let retention: rltrace_core::retention::Retention = toml::from_str("spans = \"30d\"").expect("retention");
        assert_eq!(store.gc_blocking(&retention, false, |_| {}).expect("gc").spans, 4);
        let cursor = store.cursor_blocking("t", "a", lease, CursorOp::Claim { from_now: false }).expect("claim").expect("ours");
        assert_eq!(cursor, 0, "moved back to the newest row left (none)");
        store.ingest_blocking(prepare(vec![fresh(span(2, 9, &[]))])).expect("ingest");
        let batch = store.read(|tx| tx.forward_batch(cursor, 10, false)).expect("read");
        assert_eq!(batch.spans.len(), 1, "the span stored after the deletion is forwarded");
    }
}

conformance! {
    /// A gateway bridge gets a delivery each time a linked sequence's value changes: the same
    /// value again is nothing to do, a new one is a new row; the newest value comes back with
    /// the sequence; a skipped delivery (the rollout is gone) ends the watch.
    fn a_gateway_bridge_gets_a_delivery_per_change_until_its_rollout_is_gone(b) {
        use rltrace_store::{Deliveries, Outcome, OutboxOp};
        let (_place, store) = temp_store_on(b);
        let link = [("agentlightning.rollout_id", s("ro-g")), ("agentlightning.attempt_id", s("at-1"))];
        store.ingest_blocking(prepare(vec![triplet_span(1, 1, "g", &link)])).expect("ingest");
        let scan = |store: &Store| store.read(|tx| tx.linked_sequences("gw", Deliveries::OnChange, 0, 10, &policy())).expect("scan").sequences;
        let seq = scan(&store).remove(0);
        assert_eq!(seq.last_value, None);
        let enqueue = |value: f64| OutboxOp::Enqueue {
            deliveries: Deliveries::OnChange,
            reason: format!("episode reward {value}"),
            bridge: "gw".into(),
            seq_ref: seq.seq_ref,
            rollout: seq.rollout.clone(),
            value,
            trace_id: [1; 16],
            start_ns: 1,
        };
        let first = store.outbox_blocking(enqueue(0.5)).expect("enqueue").expect("row");
        assert_eq!(store.outbox_blocking(enqueue(0.5)).expect("enqueue"), None, "the same value again");
        store.outbox_blocking(OutboxOp::Attempted { id: first, outcome: Outcome::Delivered }).expect("attempt");
        assert_eq!(scan(&store)[0].last_value, Some(0.5), "still watched, with its newest value");
        let second = store.outbox_blocking(enqueue(0.9)).expect("enqueue").expect("a change");
        assert!(second > first);
        let pending = store.read(|tx| tx.outbox_pending("gw", 10)).expect("pending");
        assert_eq!((pending.len(), pending[0].value, pending[0].reason.as_str()), (1, 0.9, "episode reward 0.9"));
        store.outbox_blocking(OutboxOp::Attempted { id: second, outcome: Outcome::Skipped("rollout gone".into()) }).expect("attempt");
        assert!(scan(&store).is_empty(), "a skipped delivery ends the watch");
        assert_eq!(store.outbox_blocking(enqueue(0.1)).expect("enqueue"), None, "and no delivery follows");
    }
}

conformance! {
    /// A sequence reward appended, as pending, before the sequence's first span is counted on the
    /// sequence when its spans arrive: the kept rewarded counts (the `rewarded` filter and the
    /// statistics) agree with the evaluation, which sees the reward on every triplet.
    fn a_sequence_reward_sent_before_its_spans_is_counted_when_they_arrive(b) {
        let (_d, store) = temp_store_on(b);
        let early = rltrace_store::NewReward { allow_pending: true, ..on_sequence("early", Strategy::Uniform, Some(1.0), "tests") };
        created(store.append_reward_blocking(early));
        let out = store
            .ingest_blocking(prepare(vec![triplet_span(1, 1, "early", &[]), triplet_span(1, 2, "early", &[]), triplet_span(2, 3, "plain", &[])]))
            .expect("ingest");
        assert_eq!(out.stored, 3);
        let rewarded = all_triplets(&store, &policy()).iter().filter(|t| t.sequence_id == "early" && t.effective.reward == Some(1.0)).count();
        assert_eq!(rewarded, 2);
        assert_eq!(store.read(|tx| tx.stats(&policy())).expect("stats").rewarded_triplets, 2);
        let f = SequenceFilter { rewarded: Some(true), ..SequenceFilter::default() };
        let listed = store.read(|tx| tx.sequences(&f, None, 10, &policy())).expect("list");
        assert_eq!(listed.items.iter().map(|s| s.sequence_id.as_str()).collect::<Vec<_>>(), vec!["early"]);
    }
}

conformance! {
    /// Neighbouring spans of one batch that share their trace, resource or sequence with the span
    /// before them, but not all three, each keep their own: every span comes back with its own
    /// trace and resource, and each sequence holds exactly its triplets.
    fn neighbouring_spans_keep_their_own_trace_resource_and_sequence(b) {
        use rltrace_core::span::Origin;
        use std::collections::{BTreeMap, BTreeSet};
        let (_d, store) = temp_store_on(b);
        let origin = |name: &str| std::sync::Arc::new(Origin { resource: vec![("service.name".into(), s(name))], scope_name: "t".into(), scope_version: String::new() });
        let (x, y) = (origin("x"), origin("y"));
        // (trace, span, sequence or none, resource), each differing from the one before in part.
        let layout: [(u32, u32, Option<&str>, &std::sync::Arc<Origin>); 8] = [
            (1, 1, Some("a"), &x),
            (1, 2, Some("b"), &x), // same trace and resource, another sequence
            (2, 3, Some("b"), &x), // same sequence and resource, another trace
            (2, 4, Some("b"), &y), // same trace and sequence, another resource
            (3, 5, None, &y),      // a plain span
            (3, 6, Some("a"), &y), // after a plain span of the same trace
            (3, 7, Some("a"), &x),
            (1, 8, Some("b"), &x), // back to the first trace
        ];
        let spans: Vec<_> = layout
            .iter()
            .map(|(t, n, seq, o)| {
                let mut sp = match seq {
                    Some(q) => triplet_span(*t, *n, q, &[]),
                    None => span(*t, *n, &[]),
                };
                sp.origin = std::sync::Arc::clone(o);
                sp
            })
            .collect();
        assert_eq!(store.ingest_blocking(prepare(spans.clone())).expect("ingest").stored, 8);
        let back = store.read(|tx| tx.forward_batch(0, 100, false)).expect("read");
        let got: Vec<_> = back.spans.iter().map(|r| r.span.clone()).collect();
        assert_eq!(got, spans, "each span with its own trace and resource, in arrival order");
        let mut by_seq: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for t in all_triplets(&store, &policy()) {
            by_seq.entry(t.sequence_id).or_default().insert(t.triplet_id);
        }
        let want = |q: &str| -> BTreeSet<String> {
            spans.iter().zip(&layout).filter(|(_, l)| l.2 == Some(q)).map(|(sp, _)| rltrace_core::ids::default_triplet_id(&sp.trace_id, &sp.span_id)).collect()
        };
        assert_eq!(by_seq.len(), 2, "{by_seq:?}");
        assert_eq!(by_seq["a"], want("a"));
        assert_eq!(by_seq["b"], want("b"));
        for q in ["a", "b"] {
            let d = store.read(|tx| tx.sequence(q, None, 10, &policy())).expect("read").expect("found");
            assert_eq!(d.summary.triplet_count, want(q).len() as i64, "{q}");
        }
    }
}

/// PostgreSQL's own mechanics: a session of the writer's own flushes the log of each group's
/// span rows while the group goes on (`rltrace log flusher`), and nothing depends on it: with its
/// session killed every write still commits, and it comes back by itself.
#[test]
fn the_log_flusher_commits_beside_the_writer_and_nothing_waits_for_it() {
    let place = Place::new(Backend::Postgres);
    let store = place.open();
    let flushers = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'rltrace log flusher'";
    let flushed = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'rltrace log flusher'
                   AND state = 'idle' AND query LIKE 'BEGIN; SELECT txid_current(); COMMIT%'";
    let mut batch = 0u32;
    let mut ingest = |store: &Store| {
        batch += 1;
        let spans = (0..20).map(|n| triplet_span(batch, batch * 100 + n, &format!("s{batch}"), &[])).collect();
        assert_eq!(store.ingest_blocking(prepare(spans)).expect("ingest").stored, 20);
    };
    // Until it has flushed once after a write (it connects on the first).
    let until = |sql: &str, want: i64, ingest: &mut dyn FnMut(&Store)| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            ingest(&store);
            std::thread::sleep(std::time::Duration::from_millis(100));
            let got = place.pg_int(sql).expect("postgres");
            if got == want {
                return;
            }
            assert!(std::time::Instant::now() < deadline, "{sql}: {got}, not {want}");
        }
    };
    until(flushed, 1, &mut ingest);
    assert_eq!(place.pg_int(flushers), Some(1), "one flusher session");
    // Killed: the writes go on without it, committed and counted.
    assert_eq!(
        place.pg_int(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = current_database() AND application_name = 'rltrace log flusher') t"
        ),
        Some(1)
    );
    for _ in 0..5 {
        ingest(&store);
    }
    assert!(store.health().is_ok(), "{:?}", store.health());
    // And back by itself (at most one connection attempt a second).
    until(flushed, 1, &mut ingest);
    assert_eq!(place.pg_int(flushers), Some(1), "one flusher session again");
    let spans = place.pg_int("SELECT count(*) FROM spans").expect("postgres");
    assert_eq!(spans, i64::from(batch) * 20, "every write committed");
    assert_eq!(store.read(|tx| tx.counts()).expect("counts").spans, spans as u64);
}

conformance! {
    /// Every read gives a triplet the trace of its own span and, without an explicit
    /// `rl.triplet_id`, the default id made of its trace and span ids, also when one sequence's
    /// triplets come from several traces and a trace holds triplets of several sequences (the
    /// reads look each distinct trace up once).
    fn every_read_gives_each_triplet_its_own_trace_and_default_id(b) {
        let (_d, store) = temp_store_on(b);
        let code = ("rl.state.agent_role", s("Code"));
        let mut spans: Vec<_> = (0..12u32).map(|n| triplet_span(n % 3, n, "mixed", std::slice::from_ref(&code))).collect();
        spans[5] = triplet_span(2, 5, "mixed", &[code.clone(), ("rl.triplet_id", s("chosen"))]);
        spans.push(triplet_span(1, 40, "other", std::slice::from_ref(&code)));
        spans.push(triplet_span(7, 41, "other", &[code]));
        assert_eq!(store.ingest_blocking(prepare(spans.clone())).expect("ingest").stored, 14);
        // What each triplet must say, from the spans sent.
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        let expected: std::collections::HashMap<String, String> = spans
            .iter()
            .map(|sp| {
                let explicit = sp.attributes.iter().find(|(k, _)| k == "rl.triplet_id").map(|_| "chosen".to_string());
                (explicit.unwrap_or_else(|| rltrace_core::ids::default_triplet_id(&sp.trace_id, &sp.span_id)), hex(&sp.trace_id))
            })
            .collect();
        assert_eq!(expected.len(), 14);
        let check = |what: &str, views: &[rltrace_core::export::TripletView]| {
            assert!(!views.is_empty(), "{what}: no triplets");
            for v in views {
                let trace = expected.get(&v.triplet_id).unwrap_or_else(|| panic!("{what}: unknown triplet id {}", v.triplet_id));
                assert_eq!(&v.trace_id, trace, "{what}: the trace of {}", v.triplet_id);
            }
        };
        let p = policy();
        let of_seq = TripletFilter { sequence_id: Some("mixed".into()), ..Default::default() };
        let page = store.read(|tx| tx.triplets(&of_seq, None, 100, &p)).expect("by sequence");
        assert_eq!(page.items.len(), 12);
        check("by sequence", &page.items);
        let by_role = TripletFilter { role: Some("Code".into()), ..Default::default() };
        let page = store.read(|tx| tx.triplets(&by_role, None, 100, &p)).expect("by role");
        assert_eq!(page.items.len(), 14);
        check("by role", &page.items);
        let exported = all_triplets(&store, &p);
        assert_eq!(exported.len(), 14);
        check("export", &exported);
        let detail = store.read(|tx| tx.sequence("other", None, 10, &p)).expect("sequence").expect("other exists");
        assert_eq!(detail.triplets.len(), 2);
        check("sequence", &detail.triplets);
        for id in expected.keys() {
            let one = store.read(|tx| tx.triplet(id, &p)).expect("triplet").unwrap_or_else(|| panic!("triplet {id} not found"));
            assert_eq!(&one.triplet.triplet_id, id);
            check("triplet", &[one.triplet]);
        }
    }
}
