//! Parsing of the arguments of `#[rl_triplet(...)]`: every mistake is a compile error whose span
//! points at the offending argument.

use proc_macro2::Span;
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{Expr, Ident, LitStr, Path, Token};

/// How the sequence id of a triplet is formed (DESIGN section 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    Pipeline,
    Agent,
    Session,
    Custom,
}

impl Scope {
    pub fn variant(self) -> &'static str {
        match self {
            Scope::Pipeline => "Pipeline",
            Scope::Agent => "Agent",
            Scope::Session => "Session",
            Scope::Custom => "Custom",
        }
    }
}

/// The parsed arguments.
#[derive(Default)]
pub struct Args {
    pub role: Option<Expr>,
    pub scope: Option<(Scope, Span)>,
    pub task_id: Option<Expr>,
    pub session_id: Option<Expr>,
    pub sequence_id: Option<Expr>,
    pub skip: Vec<Ident>,
    pub state: Option<Path>,
    pub action: Option<Path>,
    pub name: Option<LitStr>,
}

const KNOWN: &str = "role, scope, task_id, session_id, sequence_id, skip, state, action, name";

impl Parse for Args {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let mut args = Args::default();
        let mut seen: Vec<String> = Vec::new();
        while !input.is_empty() {
            let key: Ident = input.parse()?;
            let key_str = key.to_string();
            if seen.contains(&key_str) {
                return Err(syn::Error::new(key.span(), format!("duplicate argument `{key_str}`")));
            }
            seen.push(key_str.clone());
            if key_str == "skip" {
                let content;
                syn::parenthesized!(content in input);
                let names: Punctuated<Ident, Token![,]> = content.parse_terminated(Ident::parse_any_ident, Token![,])?;
                if names.is_empty() {
                    return Err(syn::Error::new(key.span(), "`skip` needs at least one argument name: skip(arg, ...)"));
                }
                args.skip = names.into_iter().collect();
            } else {
                if !input.peek(Token![=]) {
                    return Err(syn::Error::new(
                        key.span(),
                        if is_known(&key_str) {
                            format!("expected `{key_str} = ...`")
                        } else {
                            format!("unknown argument `{key_str}`; expected one of {KNOWN}")
                        },
                    ));
                }
                input.parse::<Token![=]>()?;
                match key_str.as_str() {
                    "role" => args.role = Some(input.parse()?),
                    "task_id" => args.task_id = Some(input.parse()?),
                    "session_id" => args.session_id = Some(input.parse()?),
                    "sequence_id" => args.sequence_id = Some(input.parse()?),
                    "state" => args.state = Some(parse_path(input, "state")?),
                    "action" => args.action = Some(parse_path(input, "action")?),
                    "name" => {
                        let lit: LitStr = input
                            .parse()
                            .map_err(|e| syn::Error::new(e.span(), "`name` must be a string literal, e.g. name = \"plan\""))?;
                        if lit.value().is_empty() {
                            return Err(syn::Error::new(lit.span(), "`name` must not be empty"));
                        }
                        args.name = Some(lit);
                    }
                    "scope" => args.scope = Some(parse_scope(input)?),
                    _ => return Err(syn::Error::new(key.span(), format!("unknown argument `{key_str}`; expected one of {KNOWN}"))),
                }
            }
            if input.is_empty() {
                break;
            }
            input.parse::<Token![,]>()?;
        }
        args.check()?;
        Ok(args)
    }
}

fn is_known(k: &str) -> bool {
    KNOWN.split(", ").any(|x| x == k)
}

fn parse_path(input: ParseStream<'_>, what: &str) -> syn::Result<Path> {
    input.parse::<Path>().map_err(|e| syn::Error::new(e.span(), format!("`{what}` must be a path to a function, e.g. {what} = capture::{what}")))
}

fn parse_scope(input: ParseStream<'_>) -> syn::Result<(Scope, Span)> {
    let (text, span) = if input.peek(LitStr) {
        let l: LitStr = input.parse()?;
        (l.value(), l.span())
    } else {
        let expr: Expr = input.parse()?;
        match &expr {
            Expr::Path(p) if p.path.get_ident().is_some() => (p.path.get_ident().map(Ident::to_string).unwrap_or_default(), expr.span()),
            _ => return Err(syn::Error::new(expr.span(), "`scope` must be one of pipeline, agent, session, custom")),
        }
    };
    let scope = match text.as_str() {
        "pipeline" => Scope::Pipeline,
        "agent" => Scope::Agent,
        "session" => Scope::Session,
        "custom" => Scope::Custom,
        other => return Err(syn::Error::new(span, format!("unknown scope `{other}`; expected one of pipeline, agent, session, custom"))),
    };
    Ok((scope, span))
}

impl Args {
    /// The scope: explicit, else `custom` when `sequence_id` is given, `session` when only
    /// `session_id` is given, `pipeline` otherwise.
    pub fn effective_scope(&self) -> Scope {
        match (&self.scope, &self.sequence_id, &self.session_id, &self.task_id) {
            (Some((s, _)), ..) => *s,
            (None, Some(_), ..) => Scope::Custom,
            (None, None, Some(_), None) => Scope::Session,
            _ => Scope::Pipeline,
        }
    }

    fn check(&self) -> syn::Result<()> {
        if let Some((scope, span)) = self.scope {
            match scope {
                Scope::Custom if self.sequence_id.is_none() => {
                    return Err(syn::Error::new(span, "scope = custom needs `sequence_id = <expr>`"));
                }
                Scope::Agent if self.role.is_none() => {
                    return Err(syn::Error::new(span, "scope = agent needs `role = ...` (the sequence id is {task_id}:{role})"));
                }
                Scope::Pipeline | Scope::Agent | Scope::Session if self.sequence_id.is_some() => {
                    let e = self.sequence_id.as_ref().map_or(span, Spanned::span);
                    return Err(syn::Error::new(e, "`sequence_id` is only allowed with scope = custom"));
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// Helper so `skip(self)` parses: `self` is a keyword.
trait ParseAnyIdent {
    fn parse_any_ident(input: ParseStream<'_>) -> syn::Result<Ident>;
}

impl ParseAnyIdent for Ident {
    fn parse_any_ident(input: ParseStream<'_>) -> syn::Result<Ident> {
        use syn::ext::IdentExt;
        Ident::parse_any(input)
    }
}
