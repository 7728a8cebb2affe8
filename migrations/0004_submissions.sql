-- Submissions: one checkpoint or a weighted ensemble, scored on the dataset's hidden test labels. `members` is JSON,
-- one object per member: {"session": "user/dataset/n", "checkpoint": "best", "epoch": 7, "weight": 0.5} (the checkpoint
-- as asked, the epoch it resolved to when queued). A dry run (`submit -t`) predicts 200 test stickers, keeps its
-- accuracy in `public_score`, is never ranked and never counts against the daily limit. Private scores are stored at
-- once and shown only when revealed.
CREATE TABLE submissions (
    id            INTEGER PRIMARY KEY,
    dataset       TEXT NOT NULL,
    user          TEXT NOT NULL,             -- the user of the (first) member's session
    members       TEXT NOT NULL,
    tta           TEXT NOT NULL CHECK (tta IN ('none', 'flip')),
    dry_run       INTEGER NOT NULL,
    state         TEXT NOT NULL CHECK (state IN ('queued', 'running', 'scored', 'failed')),
    public_score  REAL,
    private_score REAL,
    samples       INTEGER,                   -- test stickers predicted
    npy_path      TEXT,                      -- predictions.npy, once written
    error         TEXT,                      -- why it failed
    slot          TEXT,                      -- the worker slot it ran in
    infer_seconds REAL,                      -- inference of uncached members
    score_seconds REAL,                      -- mixing, writing the .npy and scoring
    created_at    REAL NOT NULL,
    started_at    REAL,
    finished_at   REAL
);

CREATE INDEX submissions_by_dataset ON submissions (dataset, state);
CREATE INDEX submissions_by_user ON submissions (user, created_at);
