-- The daemon's tables: registered datasets, spec files seen in experiments/, sessions, their metrics, checkpoints and
-- events. Times are seconds since the Unix epoch (REAL). Append-only: later changes go in new numbered files.

CREATE TABLE datasets (
    name          TEXT PRIMARY KEY NOT NULL,
    path          TEXT NOT NULL,             -- $RUSH_HOME/datasets/<name>
    train_images  INTEGER NOT NULL,
    classes       INTEGER NOT NULL,
    test_images   INTEGER NOT NULL,
    registered_at REAL NOT NULL
);

-- One row per (file, content): a re-save of the same content or a touch finds its row and queues nothing.
CREATE TABLE specs (
    id      INTEGER PRIMARY KEY,
    path    TEXT NOT NULL,                   -- absolute path of the spec file
    hash    TEXT NOT NULL,                   -- sha256 of the file's bytes
    status  TEXT NOT NULL CHECK (status IN ('accepted', 'rejected')),
    error   TEXT,                            -- why it was rejected: file, field, problem
    seen_at REAL NOT NULL,
    UNIQUE (path, hash)
);

-- Session numbers per user and dataset, never reused (not even after `rm`).
CREATE TABLE session_counters (
    user    TEXT NOT NULL,
    dataset TEXT NOT NULL,
    last_n  INTEGER NOT NULL,
    PRIMARY KEY (user, dataset)
);

CREATE TABLE sessions (
    id           TEXT PRIMARY KEY NOT NULL,  -- user/dataset/n
    user         TEXT NOT NULL,
    dataset      TEXT NOT NULL,
    n            INTEGER NOT NULL,
    spec_id      INTEGER REFERENCES specs (id), -- NULL for forks
    fork_of      TEXT,                       -- session:checkpoint a fork starts from
    spec         TEXT NOT NULL,              -- the resolved spec (JSON), written as spec.yaml at launch
    memo         TEXT NOT NULL DEFAULT '',
    priority     INTEGER NOT NULL DEFAULT 0,
    device       TEXT NOT NULL CHECK (device IN ('gpu', 'cpu')),
    state        TEXT NOT NULL CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'stopped', 'interrupted')),
    seq          INTEGER NOT NULL,           -- FIFO order among equal priorities
    queued_at    REAL NOT NULL,
    started_at   REAL,
    finished_at  REAL,
    slot         TEXT,                       -- gpu0, cpu1, ... while running
    pid          INTEGER,                    -- the child's pid while running
    pid_start    INTEGER,                    -- its start time (/proc/<pid>/stat field 22), to recognise it after a restart
    exit_reason  TEXT,
    epochs       INTEGER NOT NULL,           -- epochs the spec asks for
    epoch        INTEGER,                    -- the last epoch that ended
    best_val_acc REAL,
    UNIQUE (user, dataset, n)
);
CREATE INDEX sessions_by_state ON sessions (state, priority, seq);

-- Step and epoch metrics, written in batches (one transaction per batch).
CREATE TABLE metrics (
    session TEXT NOT NULL,
    step    INTEGER NOT NULL,
    epoch   INTEGER NOT NULL,
    name    TEXT NOT NULL,
    value   REAL NOT NULL,
    t       REAL NOT NULL
);
CREATE INDEX metrics_series ON metrics (session, name, step);

-- Checkpoints the child reported; a row goes only after its files are deleted.
CREATE TABLE checkpoints (
    session    TEXT NOT NULL,
    epoch      INTEGER NOT NULL,
    name       TEXT NOT NULL,
    path       TEXT NOT NULL,                -- absolute path of the weights (.safetensors)
    val_acc    REAL NOT NULL,
    val_loss   REAL,
    train_loss REAL,
    bytes      INTEGER NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (session, epoch)
);

-- The child's events other than steps (started, epoch, checkpoint, finished, failed), for history and live views.
CREATE TABLE events (
    id      INTEGER PRIMARY KEY,
    session TEXT NOT NULL,
    t       REAL NOT NULL,
    kind    TEXT NOT NULL,
    body    TEXT NOT NULL                    -- the JSON line as the child wrote it
);
CREATE INDEX events_by_session ON events (session, id);
