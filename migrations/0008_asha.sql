-- ASHA early stopping for sweeps. A session may now wait at a rung (it holds no slot) and end `pruned`; SQLite cannot
-- change a CHECK constraint, so the sessions table is rebuilt with the two new states (same columns, same rows, same
-- indexes) plus `sweep`: the sessions queued together from one sweep share it (the `seq` of its first session), also
-- when the sweep came through `rush run` rather than a file. Nothing references sessions by foreign key.
CREATE TABLE sessions_v8 (
    id            TEXT PRIMARY KEY NOT NULL,
    user          TEXT NOT NULL,
    dataset       TEXT NOT NULL,
    n             INTEGER NOT NULL,
    spec_id       INTEGER REFERENCES specs (id),
    fork_of       TEXT,
    spec          TEXT NOT NULL,
    memo          TEXT NOT NULL DEFAULT '',
    priority      INTEGER NOT NULL DEFAULT 0,
    device        TEXT NOT NULL CHECK (device IN ('gpu', 'cpu')),
    state         TEXT NOT NULL CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'stopped', 'interrupted',
                                                 'waiting', 'pruned')),
    seq           INTEGER NOT NULL,
    queued_at     REAL NOT NULL,
    started_at    REAL,
    finished_at   REAL,
    slot          TEXT,
    pid           INTEGER,
    pid_start     INTEGER,
    exit_reason   TEXT,
    epochs        INTEGER NOT NULL,
    epoch         INTEGER,
    best_val_acc  REAL,
    slurm_job     INTEGER,
    slurm_attempt INTEGER NOT NULL DEFAULT 0,
    events_offset INTEGER NOT NULL DEFAULT 0,
    log_offset    INTEGER NOT NULL DEFAULT 0,
    sweep         INTEGER,                    -- the seq of the sweep's first session; NULL for a single session
    UNIQUE (user, dataset, n)
);
INSERT INTO sessions_v8 (id, user, dataset, n, spec_id, fork_of, spec, memo, priority, device, state, seq, queued_at,
                         started_at, finished_at, slot, pid, pid_start, exit_reason, epochs, epoch, best_val_acc,
                         slurm_job, slurm_attempt, events_offset, log_offset, sweep)
SELECT id, user, dataset, n, spec_id, fork_of, spec, memo, priority, device, state, seq, queued_at,
       started_at, finished_at, slot, pid, pid_start, exit_reason, epochs, epoch, best_val_acc,
       slurm_job, slurm_attempt, events_offset, log_offset,
       (SELECT CASE WHEN count(*) > 1 THEN min(o.seq) END FROM sessions o WHERE o.spec_id = sessions.spec_id)
  FROM sessions;
DROP TABLE sessions;
ALTER TABLE sessions_v8 RENAME TO sessions;
CREATE INDEX sessions_by_state ON sessions (state, priority, seq);
CREATE INDEX sessions_by_seq ON sessions (seq);
CREATE INDEX sessions_by_dataset_seq ON sessions (dataset, seq);
CREATE INDEX sessions_by_state_seq ON sessions (state, seq);
CREATE INDEX sessions_by_sweep ON sessions (sweep, seq);

-- What each trial of an ASHA sweep scored at each rung it reached, in arrival order, and where it stands there.
CREATE TABLE rungs (
    session  TEXT NOT NULL,
    sweep    INTEGER NOT NULL,
    rung     INTEGER NOT NULL,              -- 0 = the first rung
    epoch    INTEGER NOT NULL,              -- the rung's epoch
    metric   REAL,                          -- NULL: not a finite number (ranks last)
    standing TEXT NOT NULL CHECK (standing IN ('waiting', 'promoted', 'pruned')),
    reason   TEXT,                          -- the decision, with the rank ("ranked 4 of 9, ...")
    t        REAL NOT NULL,                 -- when the result arrived
    PRIMARY KEY (session, rung)
);
CREATE INDEX rungs_by_sweep ON rungs (sweep, rung, t);
