//! The collector starts on port 0, answers health checks and stops cleanly on SIGTERM.

mod common;

#[test]
fn starts_answers_and_stops_cleanly() {
    let mut s = common::Server::start(&[]);
    let (status, body) = common::get_json(&s.url("/healthz"));
    assert_eq!(status, 200);
    assert_eq!(body["status"], "ok");
    let (status, _) = common::get_json(&s.url("/readyz"));
    assert_eq!(status, 200);
    let (status, body) = common::get_json(&s.url("/api/v1/nope"));
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "not_found");
    s.stop();
    assert!(s.db.exists());
}

#[test]
fn readyz_answers_503_when_the_store_is_gone() {
    let s = common::Server::start(&[]);
    assert_eq!(common::get_json(&s.url("/readyz")).0, 200);
    // Replace the database file by a directory: new reader connections cannot open it.
    for suffix in ["", "-wal", "-shm"] {
        let p = std::path::PathBuf::from(format!("{}{suffix}", s.db.display()));
        let _ = std::fs::remove_file(&p);
    }
    std::fs::create_dir(&s.db).expect("a directory where the database was");
    let mut saw_503 = false;
    // Idle reader connections may still answer; each readiness check takes one, bounded.
    for _ in 0..32 {
        let (status, body) = common::get_json(&s.url("/readyz"));
        if status == 503 {
            assert_eq!(body["error"]["code"], "not_ready", "{body}");
            saw_503 = true;
            break;
        }
    }
    assert!(saw_503, "readiness reports the unreachable store");
}
