-- One value per (session, name, step). A line read again after a crash (the Slurm executor's catch-up repeats at most
-- the last line it had forwarded) must not add a second row, so the store inserts with OR IGNORE against this index.
-- Duplicates an older database holds are dropped first (the earliest row is kept).
DELETE FROM metrics WHERE rowid NOT IN (SELECT min(rowid) FROM metrics GROUP BY session, name, step);
DROP INDEX metrics_series;
CREATE UNIQUE INDEX metrics_series ON metrics (session, name, step);
