//! The web dashboard and JSON API (axum + askama).

pub mod chart;
