//! Mistakes in the attribute's arguments, each reported at the argument.
use rltrace_sdk::rl_triplet;

#[rl_triplet(rol = "Plan")]
fn unknown_argument() {}

#[rl_triplet(role = "A", role = "B")]
fn duplicate() {}

#[rl_triplet(scope = galaxy)]
fn bad_scope() {}

#[rl_triplet(scope = custom)]
fn custom_without_sequence_id() {}

#[rl_triplet(scope = agent, task_id = "t")]
fn agent_without_role() {}

#[rl_triplet(skip(nope))]
fn skip_unknown(_yes: u32) {}

#[rl_triplet(name = plan)]
fn name_not_literal() {}

#[rl_triplet(state = 1 + 2)]
fn state_not_a_path() {}

#[rl_triplet]
const fn constant() {}

fn main() {}
