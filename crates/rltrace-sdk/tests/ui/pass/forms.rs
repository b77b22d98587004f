//! Every form the attribute accepts compiles unchanged in behaviour.
use rltrace_sdk::rl_triplet;

#[derive(serde::Serialize)]
struct Input {
    text: String,
}

struct NotSerialize;

#[rl_triplet]
fn bare() {}

#[rl_triplet(role = "Plan", scope = pipeline, task_id = input.text, name = "plan.step")]
fn sync_result(input: &Input, n: u32) -> Result<u32, std::num::ParseIntError> {
    let parsed: u32 = input.text.parse()?;
    Ok(parsed + n)
}

#[rl_triplet(role = "Code", scope = agent, task_id = 42, skip(handle))]
async fn async_fn(handle: NotSerialize, items: Vec<u8>) -> Option<usize> {
    let _ = handle;
    Some(items.len())
}

#[rl_triplet(scope = "session", session_id = "s-1")]
fn returns_impl(n: u8) -> impl Iterator<Item = u8> {
    0..n
}

#[rl_triplet(sequence_id = format!("ep-{}", id), scope = custom)]
fn generic<T: serde::Serialize + Clone>(id: u32, value: &T) -> T {
    value.clone()
}

fn capture_state(n: &u32) -> u32 {
    *n
}

fn capture_action(out: &u32) -> String {
    out.to_string()
}

struct Agent {
    names: Vec<String>,
}

impl Agent {
    #[rl_triplet(role = self.role(), state = capture_state, action = capture_action, skip(self))]
    fn method(&self, n: u32) -> u32 {
        n + self.names.len() as u32
    }

    #[rl_triplet(role = "Data")]
    fn borrow_mut(&mut self) -> &mut Vec<String> {
        &mut self.names
    }

    #[rl_triplet(role = "Data")]
    fn first(&self) -> Option<&str> {
        self.names.first().map(String::as_str)
    }

    #[rl_triplet(role = "Data")]
    async fn consume(self) -> usize {
        self.names.len()
    }

    fn role(&self) -> &str {
        "Agent"
    }
}

#[rl_triplet(task_id = "t")]
fn early_return(n: i32) -> Result<i32, Box<dyn std::error::Error + Send + Sync>> {
    if n < 0 {
        return Err("negative".into());
    }
    let v: i32 = "5".parse()?;
    Ok(v * n)
}

fn main() {
    bare();
    let _ = sync_result(&Input { text: "1".into() }, 2);
    let _ = async_fn(NotSerialize, vec![1]);
    let _ = returns_impl(3).count();
    let _ = generic(1, &"x".to_string());
    let mut a = Agent { names: vec!["a".into()] };
    let _ = a.method(1);
    a.borrow_mut().push("b".into());
    let _ = a.first();
    let _ = a.consume();
    let _ = early_return(2);
}
