-- Min/max rollups of every metric series in buckets of 32 and 1024 steps, kept by the store in the same transaction
-- as the metric rows, so a chart of a million steps reads about a thousand rows instead of scanning the series.
-- Filled here from the rows a database already holds.
CREATE TABLE metric_rollups (
    session TEXT NOT NULL,
    name    TEXT NOT NULL,
    width   INTEGER NOT NULL,             -- steps per bucket: 32 or 1024
    bucket  INTEGER NOT NULL,             -- step / width
    lo      REAL NOT NULL,                -- the smallest value in the bucket
    hi      REAL NOT NULL,                -- the largest
    n       INTEGER NOT NULL,             -- rows in the bucket
    PRIMARY KEY (session, name, width, bucket)
) WITHOUT ROWID;

INSERT INTO metric_rollups (session, name, width, bucket, lo, hi, n)
SELECT session, name, 32, step / 32, min(value), max(value), count(*) FROM metrics GROUP BY session, name, step / 32;

INSERT INTO metric_rollups (session, name, width, bucket, lo, hi, n)
SELECT session, name, 1024, step / 1024, min(value), max(value), count(*) FROM metrics GROUP BY session, name, step / 1024;
