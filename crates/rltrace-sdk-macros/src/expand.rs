//! Code generation of `#[rl_triplet]`: the function body is wrapped so that one triplet span
//! starts before it (state captured from the arguments) and ends after it (action from the
//! return value, an `Err`, or a panic, which is recorded and then resumed).

use proc_macro2::{Span, TokenStream, TokenTree};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{FnArg, Ident, ItemFn, Pat, ReturnType, Type};

use crate::attr::Args;

/// Expand the attribute on `item`.
pub fn expand(args: Args, item: ItemFn) -> syn::Result<TokenStream> {
    let ItemFn { attrs, vis, sig, block, .. } = &item;
    if let Some(c) = &sig.constness {
        return Err(syn::Error::new(c.span(), "#[rl_triplet] cannot instrument a `const fn`"));
    }
    if let Some(v) = &sig.variadic {
        return Err(syn::Error::new(v.span(), "#[rl_triplet] cannot instrument a variadic function"));
    }

    // Arguments: named ones are captured unless skipped; `self` never is (but a custom state
    // capturer receives it).
    let mut named: Vec<Ident> = Vec::new();
    let mut receiver: Option<TokenStream> = None;
    for input in &sig.inputs {
        match input {
            FnArg::Receiver(r) => {
                let self_tok = &r.self_token;
                receiver = Some(if matches!(r.kind, syn::ReceiverKind::Reference(..)) { quote!(&*#self_tok) } else { quote!(&#self_tok) });
            }
            FnArg::Typed(t) => {
                if let Pat::Ident(p) = &*t.pat {
                    named.push(p.ident.clone());
                }
            }
        }
    }
    let mut skip_self = false;
    for s in &args.skip {
        if s == "self" {
            if receiver.is_none() {
                return Err(syn::Error::new(s.span(), "`self` is not an argument of this function"));
            }
            skip_self = true;
        } else if !named.iter().any(|n| n == s) {
            return Err(syn::Error::new(s.span(), format!("`{s}` is not a named argument of this function")));
        }
    }
    let captured: Vec<&Ident> = named.iter().filter(|n| !args.skip.iter().any(|s| s == *n)).collect();

    let fn_name = sig.ident.to_string();
    let span_name = args.name.as_ref().map_or_else(|| fn_name.clone(), syn::LitStr::value);
    let scope = format_ident!("{}", args.effective_scope().variant());

    let role = match &args.role {
        Some(e) => quote_spanned!(e.span()=> ::core::option::Option::Some(::core::convert::AsRef::<str>::as_ref(&(#e)))),
        None => quote!(::core::option::Option::None),
    };
    // A string literal key is made once per call site (a `static`); any other expression is
    // copied into a shared string per call, from its `Display` text unless it is a string.
    let key = |e: &Option<syn::Expr>| match e {
        Some(syn::Expr::Lit(syn::ExprLit { lit: syn::Lit::Str(lit), .. })) => quote_spanned!(lit.span()=> {
            static __RL_KEY: __rl_p::StaticKey = __rl_p::StaticKey::new(#lit);
            ::core::option::Option::Some(__RL_KEY.get())
        }),
        Some(e) => quote_spanned!(e.span()=> ::core::option::Option::Some((&__rl_p::Wrap(&(#e))).__rl_key())),
        None => quote!(::core::option::Option::None),
    };
    let (task_id, session_id, sequence_id) = (key(&args.task_id), key(&args.session_id), key(&args.sequence_id));

    let write_state = match &args.state {
        Some(path) => {
            let mut refs: Vec<TokenStream> = Vec::new();
            if let (Some(r), false) = (&receiver, skip_self) {
                refs.push(r.clone());
            }
            refs.extend(captured.iter().map(|n| quote!(&#n)));
            quote_spanned!(path.span()=> __rl_w.custom(&#path(#(#refs),*));)
        }
        None => {
            let lines = captured.iter().map(|n| {
                let s = n.to_string();
                quote_spanned!(n.span()=> __rl_w.arg(#s, &#n);)
            });
            quote!(#(#lines)*)
        }
    };

    let record_output = match &args.action {
        Some(path) => quote_spanned!(path.span()=> __rl_a.output(&#path(&__rl_v));),
        // A function without a return type returns `()`, whose JSON `null` records nothing.
        None if matches!(sig.output, ReturnType::Default) => quote!(),
        None => quote! {
            if let ::core::result::Result::Ok(__rl_ok) = &__rl_split {
                (&__rl_p::Wrap(*__rl_ok)).__rl_output(&mut __rl_a);
            }
        },
    };

    let fake_return = match &sig.output {
        ReturnType::Type(_, ty) if !contains_impl(ty) => quote! {
            #[allow(unreachable_code, clippy::diverging_sub_expression, clippy::needless_return)]
            if false {
                let __rl_fake: #ty = loop {};
                return __rl_fake;
            }
        },
        _ => quote!(),
    };

    let prologue = quote! {
        #[allow(unused_imports)]
        use ::rltrace_sdk::__private::{self as __rl_p, OutcomeResult as _, OutcomeAny as _, SerOutput as _, SerOutputAny as _, ErrMsg as _, ErrMsgAny as _, KeyStr as _, KeyDisplay as _};
        static __RL_META: __rl_p::FnMeta = __rl_p::FnMeta {
            name: #span_name,
            function: #fn_name,
            scope: __rl_p::Scope::#scope,
        };
        let __rl_call = __rl_p::Call::start_fn(
            &__RL_META,
            #role,
            __rl_p::Keys { task_id: #task_id, session_id: #session_id, sequence_id: #sequence_id },
            |__rl_w: &mut __rl_p::StateWriter<'_>| { #write_state },
        );
    };
    let epilogue = quote! {
        match __rl_res {
            ::core::result::Result::Ok(__rl_v) => {
                if __rl_call.is_recording() {
                    let mut __rl_a = __rl_call.outcome();
                    let __rl_wrapped = __rl_p::Wrap(&__rl_v);
                    let __rl_split = (&__rl_wrapped).__rl_split();
                    if let ::core::result::Result::Err(__rl_e) = &__rl_split {
                        __rl_a.error(__rl_p::type_name_of(*__rl_e), (&__rl_p::Wrap(*__rl_e)).__rl_err_msg());
                    }
                    #record_output
                    __rl_call.finish(__rl_a);
                }
                __rl_v
            }
            ::core::result::Result::Err(__rl_panic) => {
                __rl_call.finish_panic(&*__rl_panic);
                ::std::panic::resume_unwind(__rl_panic)
            }
        }
    };

    let body = if sig.asyncness.is_some() {
        quote! {
            #prologue
            let __rl_fut = async move {
                #fake_return
                #block
            };
            let __rl_res = __rl_p::Instrumented::new(__rl_fut, __rl_call.context()).await;
            #epilogue
        }
    } else {
        quote! {
            #prologue
            let __rl_once = __rl_p::Once;
            let __rl_guard = __rl_call.enter();
            #[allow(clippy::redundant_closure_call)]
            let __rl_res = ::std::panic::catch_unwind(::std::panic::AssertUnwindSafe(move || {
                // Moving a value in makes the closure FnOnce, so a body returning a borrow of a
                // `&mut` argument compiles as it did in the function.
                __rl_p::Once::consume(__rl_once);
                #fake_return
                #block
            }));
            ::core::mem::drop(__rl_guard);
            #epilogue
        }
    };

    Ok(quote! {
        #(#attrs)*
        #vis #sig {
            #body
        }
    })
}

fn contains_impl(ty: &Type) -> bool {
    fn walk(ts: TokenStream) -> bool {
        ts.into_iter().any(|t| match t {
            TokenTree::Ident(i) => i == "impl",
            TokenTree::Group(g) => walk(g.stream()),
            _ => false,
        })
    }
    walk(quote!(#ty))
}

/// A compile error at the call site of the attribute.
pub fn error_at(span: Span, msg: &str) -> TokenStream {
    syn::Error::new(span, msg).to_compile_error()
}
