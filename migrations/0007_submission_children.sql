-- The child process a running submission's inference runs in (`rush infer`, started by the daemon's launcher): its
-- pid and its start time in clock ticks after boot, so that a restarted daemon finds a child that outlived the daemon
-- that started it and kills it before the submission runs again (never two inferences of one member side by side).
ALTER TABLE submissions ADD COLUMN pid INTEGER;
ALTER TABLE submissions ADD COLUMN pid_start INTEGER;
