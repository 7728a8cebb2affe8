//! The web dashboard and JSON API (axum + askama). [`router`] builds the whole app from an [`AppState`], apart from
//! `main`, so tests drive it with `tower::ServiceExt::oneshot`; each area adds its routes in its own module.

use std::sync::Arc;

use axum::Router;

use crate::daemon::Daemon;

pub mod analysis;
pub mod api;
pub mod auth;
pub mod chart;
pub mod error;
pub mod files;
pub mod gpus;
pub mod host;
pub mod logs;
pub mod pages;
pub mod sse;
pub mod submissions;
pub mod view;

/// What every handler sees: the running daemon (its store, home, config, live events).
#[derive(Debug, Clone)]
pub struct AppState {
    pub daemon: Arc<Daemon>,
}

impl AppState {
    pub fn new(daemon: Arc<Daemon>) -> Self {
        Self { daemon }
    }

    pub fn store(&self) -> &crate::store::Store {
        &self.daemon.store
    }

    pub fn home(&self) -> &crate::home::Home {
        self.daemon.home()
    }
}

/// The whole HTTP app: the JSON API under `/api`, the dashboard's pages, and the access rule over both.
pub fn router(state: AppState) -> Router {
    let gate = auth::Gate::of(&state.daemon);
    Router::new()
        .nest("/api", api::routes())
        .merge(pages::routes())
        .layer(axum::middleware::from_fn_with_state(gate, auth::guard))
        .with_state(state)
}
