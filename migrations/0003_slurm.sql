-- Sessions run as Slurm batch jobs (executor: slurm): the job that runs the session now, how many jobs it has had, and
-- how far the daemon has read the files the job writes (events.jsonl and the trainer's stderr), so a restarted daemon
-- re-attaches to the same job, catches up from there, and never submits a session twice.
ALTER TABLE sessions ADD COLUMN slurm_job INTEGER;                      -- the current attempt's job id, once known
ALTER TABLE sessions ADD COLUMN slurm_attempt INTEGER NOT NULL DEFAULT 0; -- submissions so far (1 = the first)
ALTER TABLE sessions ADD COLUMN events_offset INTEGER NOT NULL DEFAULT 0; -- bytes of events.jsonl already stored
ALTER TABLE sessions ADD COLUMN log_offset INTEGER NOT NULL DEFAULT 0;    -- bytes of slurm-train.log already in train.log
