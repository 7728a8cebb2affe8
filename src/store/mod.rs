//! The store: all SQL lives here (SQLite through sqlx, WAL, numbered append-only migrations in `migrations/`).
