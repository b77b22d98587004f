//! The one list of the HTTP routes. [`crate::app`] builds the router from it, the metrics take
//! their route label from it, and a test checks it against the OpenAPI document: every route but
//! OTLP's own must be documented with its method, and the document names no other.

use std::sync::OnceLock;

use axum::handler::Handler;
use axum::http::Method;
use axum::routing::MethodRouter;

use crate::auth::{Access, Scope};
use crate::{AppState, api, ingest, ui};

/// One route: a method on a path template.
pub struct Route {
    /// The method.
    pub method: Method,
    /// The path template, as axum and OpenAPI write it (`/api/v1/sequences/{sequence_id}`).
    pub path: &'static str,
    /// Whether `/openapi.json` documents it: everything but OTLP's `POST /v1/traces`, which the
    /// OpenTelemetry specification defines, and the web UI's pages under `/ui`.
    pub documented: bool,
    /// What a request needs ([`crate::auth`]).
    pub access: Access,
    handler: MethodRouter<AppState>,
}

impl Route {
    fn get<H: Handler<T, AppState>, T: 'static>(path: &'static str, handler: H) -> Route {
        Route { method: Method::GET, path, documented: true, access: Access::Needs(Scope::Read), handler: axum::routing::get(handler) }
    }

    fn post<H: Handler<T, AppState>, T: 'static>(path: &'static str, handler: H) -> Route {
        Route { method: Method::POST, path, documented: true, access: Access::Needs(Scope::Write), handler: axum::routing::post(handler) }
    }

    fn undocumented(self) -> Route {
        Route { documented: false, ..self }
    }

    fn needs(self, scope: Scope) -> Route {
        Route { access: Access::Needs(scope), ..self }
    }

    fn public(self) -> Route {
        Route { access: Access::Public, ..self }
    }

    /// The method router of this route.
    pub(crate) fn into_handler(self) -> MethodRouter<AppState> {
        self.handler
    }
}

/// Every route the HTTP listener serves. Add a route here, never on the router directly.
/// A GET needs the `read` scope and a POST `write` unless the route says otherwise.
pub fn table() -> Vec<Route> {
    vec![
        Route::post("/v1/traces", ingest::otlp_http).undocumented().needs(Scope::Ingest),
        Route::get("/api/v1/sequences", api::list_sequences),
        Route::get("/api/v1/sequences/{sequence_id}", api::get_sequence),
        Route::get("/api/v1/triplets", api::list_triplets),
        Route::get("/api/v1/triplets/{triplet_id}", api::get_triplet),
        Route::get("/api/v1/traces/{trace_id}", api::get_trace),
        Route::post("/api/v1/rewards", api::post_reward),
        Route::post("/api/v1/callbacks/hitl", api::callback_hitl),
        Route::post("/api/v1/callbacks/tests", api::callback_tests),
        Route::post("/api/v1/callbacks/defects", api::callback_defects),
        // It stores nothing: reading is enough.
        Route::post("/api/v1/whatif", api::what_if).needs(Scope::Read),
        Route::get("/api/v1/export", api::export),
        Route::get("/api/v1/stats", api::stats),
        Route::get("/api/v1/forwarders", api::forwarders),
        Route::post("/api/v1/settle", api::settle).needs(Scope::Admin),
        Route::get("/healthz", api::healthz).public(),
        Route::get("/readyz", api::readyz).public(),
        Route::get("/metrics", api::metrics),
        Route::get("/openapi.json", api::openapi),
        // The web UI: HTML pages, not part of the REST API's document.
        Route::get("/ui", ui::index_redirect).undocumented(),
        Route::get("/ui/", ui::views::overview).undocumented(),
        Route::get("/ui/sequences", ui::views::sequences).undocumented(),
        Route::get("/ui/sequences/{sequence_id}", ui::views::sequence).undocumented(),
        Route::post("/ui/sequences/{sequence_id}/rewards", ui::add_reward).undocumented(),
        Route::get("/ui/triplets/{triplet_id}", ui::views::triplet).undocumented(),
        Route::get("/ui/traces/{trace_id}", ui::views::trace).undocumented(),
        Route::get("/ui/review", ui::review::queue).undocumented(),
        Route::post("/ui/review", ui::review::decide).undocumented(),
        Route::get("/ui/whatif", ui::whatif_page::page).undocumented(),
        Route::get("/ui/whatif/policy.toml", ui::whatif_page::download).undocumented(),
        Route::get("/ui/signin", ui::signin::page).undocumented().public(),
        Route::post("/ui/signin", ui::signin::sign_in).undocumented().public(),
        Route::post("/ui/signout", ui::signin::sign_out).undocumented().public(),
        Route::get("/ui/assets/{name}", ui::asset).undocumented().public(),
        Route::get("/ui/{*rest}", ui::not_found).undocumented(),
    ]
}

/// The route template equal to `matched` (a request's `MatchedPath`), as a `'static` label; `None`
/// for anything else.
pub fn template(matched: &str) -> Option<&'static str> {
    static PATHS: OnceLock<Vec<&'static str>> = OnceLock::new();
    PATHS.get_or_init(|| table().iter().map(|r| r.path).collect()).iter().copied().find(|p| *p == matched)
}
