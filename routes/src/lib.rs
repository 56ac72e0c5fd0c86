//! What every crate's HTTP routes share, so that no crate has to know
//! another's paths:
//!
//! - [`Routes`]: a router whose every route is added together with the
//!   [`Access`] it needs. The crate that defines a route declares its
//!   permission on the same line; there is no way to add a route without
//!   one. The server's key check ([`Matcher::access`]) looks the request's
//!   path up in the declarations of its listener and refuses what is not
//!   declared, so a route added tomorrow is closed until its author says
//!   who may call it.
//! - [`internal_error`]: how a failure the caller cannot fix is answered.
//!   The caller sees a short message with an error id; the server log has
//!   the same id with the detail (SQL, DataFusion's and the object store's
//!   words stay in the log).
//!
//! - [`timing`]: every request of every listener timed, by route template.
//!
//! A leaf crate (axum, tower, matchit and the Prometheus client only), so
//! the sampler, the collector and the query side share it without
//! depending on each other.

pub mod timing;

use std::fmt::Display;

use std::convert::Infallible;

use axum::Router;
use axum::extract::Request;
use axum::handler::Handler;
use axum::response::IntoResponse;
use axum::routing::{MethodRouter, Route};
use serde::{Deserialize, Serialize};
use tower::{Layer, Service};

/// What an API key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Permission {
    /// Send spans and metrics; read sampling rules and targets as SDKs do.
    Ingest,
    /// Read: traces, search, service maps, SQL, the tenant's series.
    Query,
    /// Change sampling rules and groups; read process-wide counters.
    Admin,
}

/// Who may call a route, when API keys are configured (without keys every
/// route is open, and the tenant is `X-Scope-OrgID`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, with a key or without (health checks, the web UI's pages).
    Open,
    /// A key holding any one of these permissions.
    AnyOf(&'static [Permission]),
    /// A key holding any one of these, or no `Authorization` at all: then
    /// the request is the X-Ray daemon protocol's tenant's (SDKs poll
    /// sampling rules unsigned from the daemon's address).
    AnyOfOrDaemon(&'static [Permission]),
}

impl Access {
    /// Every read API.
    pub const QUERY: Access = Access::AnyOf(&[Permission::Query]);
    /// What changes shared settings (sampling rules, groups).
    pub const ADMIN: Access = Access::AnyOf(&[Permission::Admin]);
    /// What SDKs and collectors send.
    pub const INGEST: Access = Access::AnyOf(&[Permission::Ingest]);
}

/// The declarations of one listener's routes, looked up by path.
#[derive(Debug, Clone, Default)]
pub struct Declared {
    table: Vec<(String, Access)>,
}

impl Declared {
    /// The declarations compiled for lookups by path, built once per
    /// listener.
    pub fn matcher(&self) -> Matcher {
        let mut router = matchit::Router::new();
        for (pattern, access) in &self.table {
            // A pattern matchit refuses was refused by axum first.
            let _ = router.insert(pattern.as_str(), *access);
        }
        Matcher(router)
    }

    /// Every declared route pattern with its access, in declaration order.
    pub fn routes(&self) -> &[(String, Access)] {
        &self.table
    }

    /// Both tables (routes merged onto one listener).
    pub fn merge(mut self, other: Declared) -> Declared {
        self.table.extend(other.table);
        self
    }
}

/// A listener's declarations, matched as axum matches its routes.
#[derive(Debug)]
pub struct Matcher(matchit::Router<Access>);

impl Matcher {
    /// The access the route at `path` declared; `None` when no route
    /// declared one (the request is then refused).
    pub fn access(&self, path: &str) -> Option<Access> {
        self.0.at(path).ok().map(|found| *found.value)
    }
}

/// An axum router whose routes each declared their [`Access`].
#[must_use]
pub struct Routes<S = ()> {
    router: Router<S>,
    declared: Declared,
}

impl<S: Clone + Send + Sync + 'static> Default for Routes<S> {
    fn default() -> Self {
        Self::new()
    }
}

impl<S: Clone + Send + Sync + 'static> Routes<S> {
    pub fn new() -> Self {
        Self {
            router: Router::new(),
            declared: Declared::default(),
        }
    }

    /// Adds `method_router` at `path` (axum's syntax: `{param}`,
    /// `{*rest}`), callable with `access`.
    pub fn route(mut self, path: &str, method_router: MethodRouter<S>, access: Access) -> Self {
        self.router = self.router.route(path, method_router);
        self.declared.table.push((path.to_string(), access));
        self
    }

    /// Both sets of routes (their paths must differ, as for axum's merge).
    pub fn merge(mut self, other: Routes<S>) -> Self {
        self.router = self.router.merge(other.router);
        self.declared = self.declared.merge(other.declared);
        self
    }

    /// Wraps every route in `layer` (limits, concurrency); a layer cannot
    /// add routes, so none escapes its declaration.
    pub fn layer<L>(mut self, layer: L) -> Self
    where
        L: Layer<Route> + Clone + Send + Sync + 'static,
        L::Service: Service<Request> + Clone + Send + Sync + 'static,
        <L::Service as Service<Request>>::Response: IntoResponse + 'static,
        <L::Service as Service<Request>>::Error: Into<Infallible> + 'static,
        <L::Service as Service<Request>>::Future: Send + 'static,
    {
        self.router = self.router.layer(layer);
        self
    }

    /// What answers a path no route has (when no keys are configured; with
    /// keys, such a path is refused before routing).
    pub fn fallback<H, T>(mut self, handler: H) -> Self
    where
        H: Handler<T, S>,
        T: 'static,
    {
        self.router = self.router.fallback(handler);
        self
    }

    /// Gives the routes their state.
    pub fn with_state<S2>(self, state: S) -> Routes<S2> {
        Routes {
            router: self.router.with_state(state),
            declared: self.declared,
        }
    }

    pub fn declared(&self) -> &Declared {
        &self.declared
    }

    pub fn into_parts(self) -> (Router<S>, Declared) {
        (self.router, self.declared)
    }

    /// The router alone (tests, and servers without keys).
    pub fn into_router(self) -> Router<S> {
        self.router
    }
}

/// Logs `detail` under a fresh error id and returns what the caller is
/// told: that `what` failed, and the id to find the detail by.
pub fn internal_error(what: &str, detail: &dyn Display) -> String {
    let error_id = ulid::Ulid::new();
    tracing::error!(%error_id, error = %detail, "{what}");
    format!("{what}: internal error {error_id} (the server log has the detail)")
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;

    #[test]
    fn lookups_follow_the_declarations() {
        let routes: Routes = Routes::new()
            .route("/ready", get(|| async { "ready" }), Access::Open)
            .route("/v1/traces/{trace_id}", get(|| async { "" }), Access::QUERY)
            .merge(Routes::new().route("/ui/{*path}", get(|| async { "" }), Access::Open))
            .route(
                "/CreateGroup",
                axum::routing::post(|| async { "" }),
                Access::ADMIN,
            );
        let declared = routes.declared().matcher();
        assert_eq!(declared.access("/ready"), Some(Access::Open));
        assert_eq!(declared.access("/v1/traces/abc"), Some(Access::QUERY));
        assert_eq!(declared.access("/ui/assets/x.js"), Some(Access::Open));
        assert_eq!(declared.access("/CreateGroup"), Some(Access::ADMIN));
        assert_eq!(declared.access("/v1/traces"), None);
        assert_eq!(declared.access("/DeleteEverything"), None);
        assert_eq!(routes.declared().routes().len(), 4);
    }

    #[test]
    fn internal_errors_keep_the_detail_out_of_the_message() {
        let message = internal_error("query failed", &"SQL error: ParserError(\"x\")");
        assert!(
            message.starts_with("query failed: internal error "),
            "{message}"
        );
        assert!(!message.contains("ParserError"), "{message}");
    }
}
