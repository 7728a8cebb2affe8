//! The web dashboard and JSON API (axum + askama).

pub mod auth;
pub mod chart;
pub mod files;
