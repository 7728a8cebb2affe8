-- The dashboard's session list: newest first (by seq), optionally filtered by dataset or state, one page at a time.
-- These indexes let every page walk the index instead of sorting all sessions (10,000 and more).
CREATE INDEX sessions_by_seq ON sessions (seq);
CREATE INDEX sessions_by_dataset_seq ON sessions (dataset, seq);
CREATE INDEX sessions_by_state_seq ON sessions (state, seq);
