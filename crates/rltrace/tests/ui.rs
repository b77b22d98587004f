//! The web UI in a real browser (DESIGN section 11): Debian's headless Chromium, driven through
//! `chromedriver` (W3C WebDriver), against the real `rltrace serve` on loopback. Every page is
//! opened; the review queue and the what-if are clicked through, and the REST API is asked what
//! changed (and what did not). A span named `<script>alert(1)</script>` is shown as text and
//! opens no dialog. The policy downloaded from the what-if starts a collector with `--policy`.
//!
//! Screenshots of every page go to `RLTRACE_SCREENSHOTS` (scripts/screenshots.sh sets it to
//! docs/screenshots), else to a temporary directory. A missing browser fails the test unless
//! `RLTRACE_SKIP_BROWSER=1` asks to skip it.

mod api_support;
mod common;
#[path = "common/webdriver.rs"]
mod webdriver;

use std::path::PathBuf;

use api_support::{get_ok, pct, send, span, span_id, stats, trace_id, triplet, BASE_NS, SEC};
use serde_json::{Value, json};
use webdriver::Browser;

const XSS: &str = "<script>alert(1)</script>";

/// Spans of a small platform: three complete sequences waiting for review, one still open, and
/// one whose span names and state carry markup.
fn seed(s: &common::Server) -> String {
    let mut spans = Vec::new();
    for (k, seq) in ["rev-1", "rev-2", "rev-3"].iter().enumerate() {
        for (i, role) in ["Planning", "Code", "Test"].iter().enumerate() {
            let mut t = triplet(seq, i as i64, role, (k * 100 + i * 10) as u64)
                .attr("rl.state.function", json!(format!("{}_agent.execute", role.to_lowercase())))
                .attr("rl.action.duration_ms", json!(1200 + i * 100))
                .attr("rl.reward.success", json!(if i == 1 { 0.5 } else { 1.0 }));
            if i == 2 {
                t = t.attr("rl.sequence_end", json!(true));
            }
            if *seq == "rev-3" && i == 0 {
                t = t.attr("agentlightning.rollout_id", json!("ro-rev-3")).attr("agentlightning.attempt_id", json!("at-1"));
            }
            spans.push(t);
        }
    }
    spans.push(triplet("open-1", 0, "Design", 400));
    // One trace: a root span, a triplet child and a grandchild, all named with markup.
    let tid = trace_id();
    let root = span_id();
    let child = span_id();
    spans.push(span(&tid, &root, XSS, BASE_NS + 500 * SEC).end(BASE_NS + 505 * SEC));
    spans.push(
        span(&tid, &child, XSS, BASE_NS + 501 * SEC)
            .parent(&root)
            .end(BASE_NS + 503 * SEC)
            .attr("rl.sequence_id", json!("xss-seq"))
            .attr("rl.triplet_id", json!("xss-t"))
            .attr("rl.state.agent_role", json!(XSS))
            .attr("rl.state.prompt", json!(XSS))
            .attr("rl.action.success", json!(true))
            .attr("rl.sequence_end", json!(true)),
    );
    spans.push(span(&tid, &span_id(), "db.query", BASE_NS + 502 * SEC).parent(&child).end(BASE_NS + 502 * SEC + SEC / 2));
    send(s, &spans);
    tid
}

fn shots() -> PathBuf {
    match std::env::var_os("RLTRACE_SCREENSHOTS") {
        Some(d) => PathBuf::from(d),
        None => std::env::temp_dir().join(format!("rltrace-ui-shots-{}", std::process::id())),
    }
}

fn ledger(s: &common::Server, seq: &str) -> Vec<Value> {
    get_ok(&s.url(&format!("/api/v1/sequences/{}", pct(seq))))["ledger"].as_array().cloned().unwrap_or_default()
}

fn pending(s: &common::Server) -> Vec<String> {
    get_ok(&s.url("/api/v1/sequences?review=pending"))["items"]
        .as_array()
        .map(|a| a.iter().filter_map(|i| i["sequence_id"].as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

/// The store's counts (the stats without the ingest rate, which moves with time).
fn counts(s: &common::Server) -> Value {
    let mut v = stats(s);
    if let Some(o) = v.as_object_mut() {
        o.remove("ingest_spans_per_s");
    }
    v
}

fn form(pairs: &[(&str, &str)]) -> Vec<u8> {
    pairs.iter().map(|(k, v)| format!("{}={}", pct(k), pct(v))).collect::<Vec<_>>().join("&").into_bytes()
}

fn no_dialog(b: &Browser, page: &str) {
    assert_eq!(b.alert_text(), None, "{page} opened a dialog: markup from a span ran as script");
}

#[test]
fn every_page_in_a_real_browser() {
    if !webdriver::browser_or_skip() {
        return;
    }
    let s = common::Server::start(&[]);
    let trace = seed(&s);
    let dir = shots();
    let b = Browser::start(1280, 860);

    // Overview: counts as the API says, real charts.
    b.goto(&s.url("/ui/"));
    assert_eq!(b.title(), "Overview · rltrace");
    let st = stats(&s);
    assert_eq!(b.get("#stat-triplets").text(), st["triplets"].to_string());
    assert_eq!(b.get("#stat-sequences").text(), st["sequences"].to_string());
    assert!(b.all("figure.chart svg rect.bar").len() >= 10, "a histogram of bars");
    assert!(!b.all("figure.chart polyline.line, figure.chart circle.dot").is_empty(), "the role chart");
    b.screenshot(&dir.join("overview.png"));

    // Sequences: paging through the API's cursor, the review filter, links.
    b.goto(&s.url("/ui/sequences?limit=2"));
    assert_eq!(b.all("table.rows tbody tr").len(), 2);
    b.get("a[rel=next]").click_to_load();
    assert!(b.url().contains("cursor="), "{}", b.url());
    assert!(!b.all("table.rows tbody tr").is_empty());
    b.goto(&s.url("/ui/sequences?review=pending"));
    let listed: Vec<String> = b.all("table.rows tbody a.row-link").iter().map(|e| e.text()).collect();
    assert!(listed.contains(&"rev-1".to_string()) && !listed.contains(&"open-1".to_string()), "{listed:?}");
    b.goto(&s.url("/ui/sequences?since=soon"));
    assert!(b.get(".notice.error").text().contains("since"), "a bad filter says why");
    b.goto(&s.url("/ui/sequences"));
    b.screenshot(&dir.join("sequences.png"));

    // Keyboard: "/" focuses the filter, "j" the first row's link.
    b.keys("/");
    assert_eq!(b.script("return document.activeElement.id"), json!("f-role"));
    b.script("document.activeElement.blur()");
    b.keys("j");
    assert_eq!(b.script("return document.activeElement.className"), json!("row-link"));

    // A sequence: triplets in order with role, function, duration, reward; the reward form.
    b.goto(&s.url("/ui/sequences/rev-3"));
    let link = b.get("#seq-rollout").text();
    assert!(link.contains("ro-rev-3") && link.contains("at-1"), "the rollout link is shown: {link}");
    let rows = b.all("table.rows tbody tr");
    assert_eq!(rows.len(), 3);
    let first = rows[0].text();
    assert!(first.contains("Planning") && first.contains("planning_agent.execute") && first.contains("1200 ms"), "{first}");
    let before = ledger(&s, "rev-3").len();
    b.get("#r-value").fill("2");
    b.get("form.box button[type=submit]").click_to_load();
    assert!(b.get(".notice.error").text().contains("value"), "an out-of-range value is refused on the page");
    assert_eq!(ledger(&s, "rev-3").len(), before, "a refused reward changes nothing");
    b.get("#r-value").fill("0.9");
    b.get("#r-source").fill("judge");
    b.get("#r-reason").fill("clear plan");
    b.get("form.box button[type=submit]").click_to_load();
    assert!(b.get(".notice.ok").text().contains("appended"), "{}", b.get("main").text());
    let after = ledger(&s, "rev-3");
    assert_eq!(after.len(), before + 1);
    assert!(after.iter().any(|e| e["source"] == "judge" && e["value"] == 0.9 && e["reason"] == "clear plan"), "{after:?}");
    b.screenshot(&dir.join("sequence.png"));

    // A triplet: foldable state and action, the explanation.
    b.get("table.rows tbody a.row-link").click_to_load();
    assert!(b.title().starts_with("Triplet "), "{}", b.title());
    assert!(!b.all(".json details").is_empty(), "foldable JSON");
    let explain = b.get("main").text();
    assert!(explain.contains("judge") && explain.contains("local"), "{explain}");
    b.screenshot(&dir.join("triplet.png"));

    // A trace: the waterfall with the triplet marked; markup in names stays text.
    b.goto(&s.url(&format!("/ui/traces/{trace}")));
    no_dialog(&b, "the trace page");
    assert_eq!(b.all("table.waterfall tbody tr").len(), 3);
    assert_eq!(b.all("table.waterfall tr.trip").len(), 1);
    assert!(b.get("table.waterfall").text().contains(XSS), "the span's name is shown as text");
    assert_eq!(b.script("return document.querySelectorAll('main script').length"), json!(0));
    b.get("table.waterfall tr.trip a.row-link").click_to_load();
    assert!(b.get("#detail").text().contains("rl.state.prompt"));
    no_dialog(&b, "a span's detail");
    b.screenshot(&dir.join("trace.png"));
    b.goto(&s.url("/ui/triplets/xss-t"));
    no_dialog(&b, "the triplet page");
    assert!(b.get("main").text().contains(XSS));
    b.goto(&s.url("/ui/sequences/xss-seq"));
    no_dialog(&b, "the sequence page");

    // The review queue: oldest first; a decision without justification is refused on the page
    // and changes nothing; with one it reaches the ledger at once and leaves the queue.
    b.goto(&s.url("/ui/review"));
    let queue: Vec<String> = b.all("li.review").iter().filter_map(|e| e.attr("data-sequence")).collect();
    assert_eq!(queue, ["rev-1", "rev-2", "rev-3", "xss-seq"], "oldest first");
    b.screenshot(&dir.join("review.png"));
    let events = stats(&s)["reward_events"].clone();
    let item = b.get("li.review[data-sequence='rev-1']");
    item.find("input[name=reviewer]").expect("reviewer").fill("ann");
    item.find("button[value=approved]").expect("approve").click_to_load();
    let refused = b.get(".notice.error").text();
    assert!(refused.contains("justification is required"), "{refused}");
    assert_eq!(stats(&s)["reward_events"], events, "a refused decision appends nothing");
    assert!(pending(&s).contains(&"rev-1".to_string()));
    let item = b.get("li.review[data-sequence='rev-1']");
    item.find("input[name=reviewer]").expect("reviewer").fill("ann");
    item.find("textarea[name=justification]").expect("justification").fill("tests cover the change");
    item.find("button[value=approved]").expect("approve").click_to_load();
    assert!(b.get(".notice.ok").text().contains("approved"), "{}", b.get("main").text());
    let hitl: Vec<Value> = ledger(&s, "rev-1").into_iter().filter(|e| e["source"] == "hitl").collect();
    assert_eq!(hitl.len(), 1, "{hitl:?}");
    assert_eq!(hitl[0]["value"], 1.0);
    assert!(hitl[0]["reason"].as_str().is_some_and(|r| r.contains("ann") && r.contains("tests cover the change")));
    let t = &get_ok(&s.url("/api/v1/sequences/rev-1"))["triplets"][0];
    assert_eq!(t["reward_sources"]["hitl"], 1.0, "the effective reward changed at once: {t}");
    assert!(!pending(&s).contains(&"rev-1".to_string()), "it left the queue");
    assert!(b.find("li.review[data-sequence='rev-1']").is_none());
    // Defer the next one: recorded without a value, and it leaves the queue too.
    let item = b.get("li.review[data-sequence='rev-2']");
    assert_eq!(item.find("input[name=reviewer]").and_then(|r| r.attr("value")).as_deref(), Some("ann"), "the reviewer is kept");
    item.find("textarea[name=justification]").expect("justification").fill("waiting for the security review");
    item.find("button[value=deferred]").expect("defer").click_to_load();
    let deferred: Vec<Value> = ledger(&s, "rev-2").into_iter().filter(|e| e["source"] == "hitl").collect();
    assert_eq!(deferred.len(), 1);
    assert!(deferred[0]["value"].is_null(), "{deferred:?}");
    assert!(!pending(&s).contains(&"rev-2".to_string()));

    // The what-if: a heavier hitl weight moves rev-1; nothing is stored.
    let before_stats = counts(&s);
    let before_ledger = ledger(&s, "rev-1");
    b.goto(&s.url("/ui/whatif"));
    assert_eq!(b.get("#changed-triplets").text(), "0", "the current policy against itself");
    b.get("#w-hitl").fill("3");
    b.get("#whatif-run").click_to_load();
    assert!(b.url().contains("w.hitl=3"), "the what-if is a link: {}", b.url());
    let changed: u64 = b.get("#changed-triplets").text().replace(',', "").parse().expect("a count");
    // rev-1's triplets have local 1.0, 0.5, 1.0 and hitl 1.0: only the middle one's mean moves.
    assert_eq!(changed, 1, "one triplet of rev-1 changes");
    assert!(b.get("#most-changed").text().contains("rev-1"));
    assert_ne!(b.get("#mean-current").text(), b.get("#mean-proposed").text());
    let shown_toml = b.get("#policy-toml").text();
    b.screenshot(&dir.join("whatif.png"));
    assert_eq!(counts(&s), before_stats, "the what-if stores nothing");
    assert_eq!(ledger(&s, "rev-1"), before_ledger);
    // A bad value is refused with its field's path.
    b.get("#w-hitl").fill("heavy");
    b.get("#whatif-run").click_to_load();
    assert!(b.get(".notice.error").text().contains("policy.sources.hitl.weight"), "{}", b.get("main").text());

    // The download is a policy file that `rltrace serve --policy` accepts.
    b.goto(&s.url("/ui/whatif?edit=1&w.hitl=3&a.hitl=mean&hitl.approved_with_changes=0.6&defects.High=0.4&c.success=0.4"));
    let href = b.get("#download").attr("href").expect("href");
    let resp = common::client().get(s.url(&href)).send().expect("download");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/toml; charset=utf-8");
    assert!(resp.headers()["content-disposition"].to_str().is_ok_and(|d| d.contains("attachment")));
    let toml_text = resp.text().expect("text");
    assert!(toml_text.contains("[sources.hitl]") && toml_text.contains("aggregation = \"mean\""), "{toml_text}");
    assert!(shown_toml.contains("[sources.hitl]"));
    let policy_file = s.dir.join("rewards.toml");
    std::fs::write(&policy_file, &toml_text).expect("write policy");
    {
        let tuned = common::Server::start(&["--policy", policy_file.to_str().expect("path")]);
        send(&tuned, &[triplet("p-1", 0, "Code", 0).attr("rl.reward.success", json!(1.0)).attr("rl.reward.latency", json!(0.0))]);
        let r = get_ok(&tuned.url("/api/v1/sequences/p-1"))["triplets"][0]["reward"].clone();
        // success weighs 0.4 and latency 1: (0.4 * 1 + 1 * 0) / 1.4.
        api_support::assert_close(&r, 0.4 / 1.4, "the downloaded policy is in force");
    }

    // Dark theme: the switch cycles system, light, dark and the pages follow.
    b.goto(&s.url("/ui/"));
    b.get("#theme").click();
    b.get("#theme").click();
    assert_eq!(b.script("return document.documentElement.dataset.theme"), json!("dark"));
    b.screenshot(&dir.join("overview-dark.png"));
    b.goto(&s.url("/ui/whatif?edit=1&w.hitl=3"));
    assert_eq!(b.script("return document.documentElement.dataset.theme"), json!("dark"), "the choice is kept");
    b.screenshot(&dir.join("whatif-dark.png"));
    b.get("#theme").click();
    assert_eq!(b.script("return document.documentElement.dataset.theme || 'system'"), json!("system"));
}

/// Forms that change state need this process's CSRF token; pages carry strict headers; assets
/// are embedded with their types and long cache lifetimes.
#[test]
fn csrf_headers_and_assets() {
    let s = common::Server::start(&[]);
    send(&s, &[triplet("c-1", 0, "Code", 0).attr("rl.sequence_end", json!(true))]);
    let c = common::client();
    let kind = "application/x-www-form-urlencoded";
    let body = form(&[("sequence_id", "c-1"), ("decision", "approved"), ("reviewer", "ann"), ("justification", "fine"), ("csrf", "forged")]);
    let (status, _, _) = common::post_raw(&s.url("/ui/review"), kind, &[], body);
    assert_eq!(status, 403);
    assert!(ledger(&s, "c-1").is_empty(), "a forged form changes nothing");
    let (status, _, _) = common::post_raw(&s.url("/ui/sequences/c-1/rewards"), kind, &[], form(&[("value", "0.5"), ("source", "judge")]));
    assert_eq!(status, 403);
    assert!(ledger(&s, "c-1").is_empty());

    let resp = c.get(s.url("/ui/")).send().expect("GET");
    assert_eq!(resp.status(), 200);
    let h = resp.headers().clone();
    assert_eq!(h["content-type"], "text/html; charset=utf-8");
    assert!(h["content-security-policy"].to_str().is_ok_and(|v| v.contains("script-src 'self'") && !v.contains("unsafe")));
    assert_eq!(h["cache-control"], "no-store");
    let page = resp.text().expect("page");
    assert!(!page.contains("http://") && !page.contains("https://"), "nothing is loaded from elsewhere");
    for (asset, kind) in [("ui.css", "text/css; charset=utf-8"), ("ui.js", "text/javascript; charset=utf-8"), ("favicon.svg", "image/svg+xml")] {
        let href = page.split(&format!("/ui/assets/{asset}?v=")).nth(1).and_then(|r| r.split('"').next()).map(|v| format!("/ui/assets/{asset}?v={v}"));
        let href = href.unwrap_or_else(|| panic!("the page links {asset}"));
        let r = c.get(s.url(&href)).send().expect("asset");
        assert_eq!(r.status(), 200, "{href}");
        assert_eq!(r.headers()["content-type"], kind);
        assert!(r.headers()["cache-control"].to_str().is_ok_and(|v| v.contains("immutable")));
        let body = r.text().expect("body");
        assert!(!body.contains("https://") || asset == "favicon.svg", "{asset} loads nothing from elsewhere");
    }
    assert_eq!(c.get(s.url("/ui/assets/missing.js")).send().expect("GET").status(), 404);
    let r = c.get(s.url("/ui")).send().expect("GET");
    assert_eq!(r.status(), 200, "/ui redirects to /ui/");
    assert_eq!(c.get(s.url("/ui/sequences/nope")).send().expect("GET").status(), 404);
    let r = c.get(s.url("/ui/no/such/page")).send().expect("GET");
    assert_eq!(r.status(), 404);
    assert!(r.headers()["content-type"].to_str().is_ok_and(|t| t.starts_with("text/html")), "an HTML page");
    assert_eq!(c.get(s.url("/ui/traces/zz")).send().expect("GET").status(), 400);
}

/// `POST /api/v1/whatif`: both distributions, most-changed sequences, bounded work, 422 with the
/// path of a bad field, nothing stored.
#[test]
fn whatif_api() {
    let s = common::Server::start(&[]);
    for k in 0..5 {
        let seq = format!("w-{k}");
        send(&s, &[triplet(&seq, 0, "Code", k * 10).attr("rl.reward.success", json!(0.5)), triplet(&seq, 1, "Test", k * 10 + 1).attr("rl.sequence_end", json!(true))]);
        if k < 2 {
            let (st, _) = common::post_json(
                &s.url("/api/v1/callbacks/hitl"),
                &json!({"sequence_id": seq, "decision": "approved_with_changes", "reviewer": "ann", "justification": "ok"}),
            );
            assert_eq!(st, 201);
        }
    }
    let before = counts(&s);
    let url = s.url("/api/v1/whatif");
    let (st, same) = common::post_json(&url, &json!({"policy": {}}));
    assert_eq!(st, 200, "{same}");
    assert_eq!(same["changed_triplets"], 0);
    assert_eq!(same["evaluated_sequences"], 5);
    assert_eq!(same["evaluated_triplets"], 10);
    assert_eq!(same["current"]["bins"], same["proposed"]["bins"]);
    let (st, w) = common::post_json(&url, &json!({"policy": {"toml": "[hitl]\napproved_with_changes = 0.2\n"}, "top": 1, "role": "Code"}));
    assert_eq!(st, 200, "{w}");
    assert_eq!(w["evaluated_triplets"], 5, "only the role's triplets count");
    assert_eq!(w["changed_triplets"], 2);
    assert_eq!(w["most_changed"].as_array().map(Vec::len), Some(1), "top bounds the list");
    assert!(w["policy_toml"].as_str().is_some_and(|t| t.contains("approved_with_changes = 0.2")));
    let (st, w) = common::post_json(&url, &json!({"policy": {}, "sequences": 2}));
    assert_eq!(st, 200);
    assert_eq!(w["evaluated_sequences"], 2);
    assert_eq!(w["bounded"], true, "it says older sequences were left out");
    for (body, path) in [
        (json!({"policy": {"sources": {"hitl": {"weight": -1}}}}), "policy.sources.hitl.weight"),
        (json!({"policy": {"hitl": {"approved": "yes"}}}), "policy.hitl.approved"),
        (json!({"policy": {"toml": "[defects]\nHuge = 0.5\n"}}), "policy.defects.Huge"),
        (json!({"policy": {}, "sequences": 100000}), "sequences"),
        (json!({"polcy": {}}), "polcy"),
    ] {
        let (st, e) = common::post_json(&url, &body);
        assert_eq!(st, 422, "{body}: {e}");
        let m = e["error"]["message"].as_str().unwrap_or_default();
        assert!(m.contains(path), "{body}: {m}");
    }
    assert_eq!(counts(&s), before, "nothing stored");
    let doc = get_ok(&s.url("/openapi.json"));
    assert!(doc["paths"]["/api/v1/whatif"]["post"].is_object());
}

/// With API keys configured: a page sends the browser to the sign-in form and back, the session
/// cookie is HttpOnly (the page's script cannot read it), a review decision goes through with the
/// session's CSRF token, and signing out ends the session.
#[test]
fn signing_in_with_a_key_in_a_real_browser() {
    if !webdriver::browser_or_skip() {
        return;
    }
    use sha2::Digest;
    const KEY: &str = "reviewer-key-0123456789abcdef";
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("rltrace.db");
    {
        // Seeded before keys are configured: the same store, opened again with [auth].
        let mut open = common::Server::start_at(&db, &[]);
        seed(&open);
        open.stop();
    }
    let digest: String = sha2::Sha256::digest(KEY.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
    let cfg = dir.path().join("rltrace.toml");
    std::fs::write(&cfg, format!("[[auth.keys]]\nname = \"reviewer\"\nscopes = [\"read\", \"write\"]\nsha256 = \"{digest}\"\n")).expect("config");
    let s = common::Server::start_at(&db, &["--config", cfg.to_str().expect("utf-8")]);
    let api = |path: &str| -> Value {
        common::client().get(s.url(path)).bearer_auth(KEY).send().expect("get").json().expect("json")
    };
    let b = Browser::start(1280, 860);

    b.goto(&s.url("/ui/review"));
    assert!(b.url().contains("/ui/signin?next=%2Fui%2Freview"), "{}", b.url());
    b.get("#key").fill("not-the-key-0123456789");
    b.get("#signin").click_to_load();
    assert!(b.get(".notice.error").text().contains("That key is not valid."));
    b.get("#key").fill(KEY);
    b.get("#signin").click_to_load();
    assert!(b.url().ends_with("/ui/review"), "back where it was going: {}", b.url());
    assert_eq!(b.title(), "Review queue · rltrace");
    assert_eq!(b.script("return document.cookie"), json!(""), "the session cookie is HttpOnly");

    let before = api("/api/v1/stats")["reward_events"].clone();
    let item = b.get("li.review[data-sequence='rev-1']");
    item.find("input[name=reviewer]").expect("reviewer").fill("ann");
    item.find("textarea[name=justification]").expect("justification").fill("signed in and reviewed");
    item.find("button[value=approved]").expect("approve").click_to_load();
    assert!(b.get(".notice.ok").text().contains("approved"), "{}", b.get("main").text());
    assert_eq!(api("/api/v1/stats")["reward_events"], json!(before.as_i64().expect("count") + 1));

    b.get("#signout").click_to_load();
    assert!(b.url().contains("/ui/signin"), "{}", b.url());
    b.goto(&s.url("/ui/"));
    assert!(b.url().contains("/ui/signin"), "the session has ended: {}", b.url());
}
