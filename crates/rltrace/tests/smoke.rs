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
