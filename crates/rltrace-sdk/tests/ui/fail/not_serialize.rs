//! A captured argument must implement `Serialize`: the error points at it (fix: `skip(conn)`).
use rltrace_sdk::rl_triplet;

struct Connection;

#[rl_triplet(role = "Data")]
fn query(conn: &Connection, sql: &str) -> usize {
    let _ = conn;
    sql.len()
}

fn main() {
    query(&Connection, "select 1");
}
