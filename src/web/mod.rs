//! The web dashboard and JSON API (axum + askama).
