//! The `#[rl_triplet]` attribute of the rltrace SDK. Use it through `rltrace_sdk::rl_triplet`:
//! the generated code calls into `rltrace_sdk`, so this crate alone is of no use.
//!
//! Split as in `tracing-attributes`: `attr.rs` parses the arguments (every mistake is a compile
//! error pointing at the argument), `expand.rs` generates the instrumented function.

mod attr;
mod expand;

use proc_macro::TokenStream;

/// Make every call of a function one RL triplet (an OpenTelemetry span with the `rl.*`
/// attributes of the rltrace wire conventions).
///
/// Arguments, all optional:
/// - `role = <expr>`: the agent role (`&str`-like), written to `state.agent_role`;
/// - `scope = pipeline | agent | session | custom`: how the sequence id is formed;
/// - `task_id = <expr>`, `session_id = <expr>`, `sequence_id = <expr>`: the sequence keys
///   (any `Display` value, evaluated before the body);
/// - `skip(arg, ...)`: arguments not captured in the state;
/// - `state = path::to::fn`, `action = path::to::fn`: custom capturers;
/// - `name = "..."`: the span name (default: the function name).
///
/// See the `rltrace_sdk` crate documentation for the full semantics and examples.
#[proc_macro_attribute]
pub fn rl_triplet(args: TokenStream, item: TokenStream) -> TokenStream {
    let args = match syn::parse::<attr::Args>(args) {
        Ok(a) => a,
        Err(e) => return with_item(e.to_compile_error(), item),
    };
    let func = match syn::parse::<syn::ItemFn>(item.clone()) {
        Ok(f) => f,
        Err(_) => {
            return with_item(
                expand::error_at(proc_macro2::Span::call_site(), "#[rl_triplet] applies to functions and methods with a body"),
                item,
            );
        }
    };
    match expand::expand(args, func) {
        Ok(ts) => ts.into(),
        Err(e) => with_item(e.to_compile_error(), item),
    }
}

/// Emit the error together with the unchanged item, so the item's other errors and its uses do
/// not drown the message.
fn with_item(err: proc_macro2::TokenStream, item: TokenStream) -> TokenStream {
    let item = proc_macro2::TokenStream::from(item);
    quote::quote!(#err #item).into()
}
