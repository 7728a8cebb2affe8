//! The daemon: watches `experiments/`, queues sessions, runs them in a worker pool, serves the HTTP API.
