//! The training child's event stream: one JSON object per line, `"v": 1`, read by the daemon and the Slurm executor.
//!
//! The child prints each event on stdout and appends it to `events.jsonl` in its session folder. Human-readable logs go
//! to stderr. A line that fails to parse is a protocol error for the reader to report, never a crash.

use serde::{Deserialize, Serialize};

/// The schema version written in every line.
pub const EVENT_VERSION: u32 = 1;

/// Set to `1` in a child's environment by the daemon, which follows its stream live: the child then also reports
/// its progress before training (the image cache's build) as `decoding` events. A child run by hand leaves them out:
/// its stream is the training's record (`started`, steps, epochs, checkpoints, its end), and the same progress goes to
/// its log.
pub const PROGRESS_EVENTS_ENV: &str = "RUSH_PROGRESS_EVENTS";

/// One line of the stream: version, wall-clock time (seconds since the Unix epoch) and the event itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventLine {
    pub v: u32,
    /// Seconds since the Unix epoch when the child wrote the line.
    pub t: f64,
    #[serde(flatten)]
    pub event: Event,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// How far the build of the decoded-image cache is (`core::progress::DecodeProgress`): sent while a child builds
    /// it, before `started`, at most about once a second, and once all images are decoded; only when the reader asked
    /// for progress events ([`PROGRESS_EVENTS_ENV`]).
    Decoding { done: u64, total: u64, seconds: f64 },
    /// The child is set up and about to train.
    Started {
        /// `cpu`, `cuda:0`, ...
        device: String,
        /// Trainable parameter count.
        params: u64,
        train_size: u64,
        valid_size: u64,
        classes: u32,
        epochs: u32,
        steps_per_epoch: u64,
        /// The first epoch this run trains (1, or later when resuming).
        start_epoch: u32,
    },
    /// A training step (emitted every few steps, not necessarily each).
    Step {
        step: u64,
        epoch: u32,
        loss: f64,
        lr: f64,
        img_per_s: f64,
        /// Share of step time spent waiting for data, 0..1.
        data_wait: f64,
    },
    /// End of an epoch with its metrics.
    Epoch {
        epoch: u32,
        train_loss: f64,
        train_acc: f64,
        val_loss: f64,
        val_acc: f64,
        seconds: f64,
        /// Share of the training time spent waiting for batches, 0..1.
        #[serde(default)]
        data_wait: f64,
        /// Seconds the training steps waited for batches (absent in lines from older children).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        data_wait_s: Option<f64>,
    },
    /// A checkpoint was written (atomically) and is ready.
    Checkpoint {
        name: String,
        path: String,
        epoch: u32,
        val_acc: f64,
        bytes: u64,
        /// A code session's ranking for `best` and retention (higher is better), in place of `val_acc`: its best
        /// metric (negated for `mode: min`), or the epoch when it reported no validation metric (the latest is best).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        score: Option<f64>,
        /// The metric `score` is; absent with a score: no validation metric was reported.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        best_by: Option<String>,
    },
    /// Training ended normally.
    Finished { epochs: u32, best_val_acc: f64 },
    /// A sweep's trial reached an ASHA rung (`core::asha`) with its checkpoint written, and exits to wait for the
    /// rung's decision; promoted, it resumes from that checkpoint.
    Paused { epoch: u32 },
    /// Training ended with an error the user should read.
    Failed { reason: String },
    /// A code session's `nsml.report`: metrics by the names the code gives them (`train__Loss`) at a step (its
    /// epoch, by AI RUSH's habit); `summary` ones make its summary.
    Report {
        step: u64,
        #[serde(default)]
        summary: bool,
        metrics: std::collections::BTreeMap<String, f64>,
    },
}

impl Event {
    pub fn name(&self) -> &'static str {
        match self {
            Event::Decoding { .. } => "decoding",
            Event::Started { .. } => "started",
            Event::Step { .. } => "step",
            Event::Epoch { .. } => "epoch",
            Event::Checkpoint { .. } => "checkpoint",
            Event::Finished { .. } => "finished",
            Event::Paused { .. } => "paused",
            Event::Failed { .. } => "failed",
            Event::Report { .. } => "report",
        }
    }
}

/// The rush metric a code session's reported one stands for, by AI RUSH's names (`train__Loss` is `train_loss`,
/// `valid__Accuracy` is `val_acc`), so its charts, `ps` and checkpoints read like a built-in session's.
pub fn standard_metric(name: &str) -> Option<&'static str> {
    let lower = name.to_ascii_lowercase().replace("__", "/");
    let (split, what) = lower.split_once('/')?;
    let split = match split {
        "train" => "train",
        "val" | "valid" | "validation" => "val",
        _ => return None,
    };
    Some(match (split, what) {
        ("train", "loss") => "train_loss",
        ("train", "acc" | "accuracy") => "train_acc",
        ("val", "loss") => "val_loss",
        ("val", "acc" | "accuracy") => "val_acc",
        _ => return None,
    })
}

impl EventLine {
    pub fn new(event: Event, t: f64) -> Self {
        Self { v: EVENT_VERSION, t, event }
    }

    /// The JSON line (without the newline).
    pub fn to_json(&self) -> String {
        // Serialising these plain structs cannot fail (no maps with non-string keys, no custom serialisers).
        serde_json::to_string(self)
            .unwrap_or_else(|e| format!("{{\"v\":1,\"event\":\"failed\",\"reason\":{:?}}}", e.to_string()))
    }

    /// Parses one line; the error says what was wrong with it.
    pub fn parse(line: &str) -> Result<Self, EventParseError> {
        let parsed: EventLine = serde_json::from_str(line)
            .map_err(|e| EventParseError::Malformed { line: truncate(line), reason: e.to_string() })?;
        if parsed.v != EVENT_VERSION {
            return Err(EventParseError::Version(parsed.v));
        }
        Ok(parsed)
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum EventParseError {
    #[error("malformed event line {line:?}: {reason}")]
    Malformed { line: String, reason: String },
    #[error("unsupported event schema version {0} (this rush reads version {EVENT_VERSION})")]
    Version(u32),
}

fn truncate(s: &str) -> String {
    s.chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip_with_tag_and_version() {
        let line = EventLine::new(
            Event::Checkpoint {
                name: "3".into(),
                path: "checkpoints/3.safetensors".into(),
                epoch: 3,
                val_acc: 0.5,
                bytes: 10,
                score: None,
                best_by: None,
            },
            1.5,
        );
        let json = line.to_json();
        assert!(json.contains("\"v\":1") && json.contains("\"event\":\"checkpoint\""), "{json}");
        assert_eq!(EventLine::parse(&json).unwrap(), line);
    }

    #[test]
    fn epoch_lines_without_data_wait_seconds_still_parse() {
        let old = r#"{"v":1,"t":1,"event":"epoch","epoch":1,"train_loss":1,"train_acc":0.5,"val_loss":1,"val_acc":0.5,"seconds":2}"#;
        let Event::Epoch { data_wait, data_wait_s, .. } = EventLine::parse(old).unwrap().event else { panic!() };
        assert_eq!((data_wait, data_wait_s), (0.0, None));
        let line = EventLine::new(
            Event::Epoch {
                epoch: 1,
                train_loss: 1.0,
                train_acc: 0.5,
                val_loss: 1.0,
                val_acc: 0.5,
                seconds: 2.0,
                data_wait: 0.25,
                data_wait_s: Some(0.5),
            },
            1.0,
        );
        let json = line.to_json();
        assert!(json.contains("\"data_wait_s\":0.5"), "{json}");
        assert_eq!(EventLine::parse(&json).unwrap(), line);
    }

    #[test]
    fn decoding_lines_carry_the_build_progress() {
        let line = EventLine::new(Event::Decoding { done: 412_000, total: 700_000, seconds: 128.75 }, 3.0);
        let json = line.to_json();
        assert!(json.contains("\"event\":\"decoding\"") && json.contains("\"done\":412000"), "{json}");
        assert_eq!(EventLine::parse(&json).unwrap(), line);
        assert_eq!(line.event.name(), "decoding");
    }

    #[test]
    fn reports_carry_named_metrics_and_nsml_names_map_to_rush_ones() {
        let json = r#"{"v":1,"t":2,"event":"report","step":3,"summary":true,"metrics":{"train__Loss":0.5,"valid__Accuracy":0.25}}"#;
        let Event::Report { step, summary, metrics } = EventLine::parse(json).unwrap().event else { panic!() };
        assert_eq!((step, summary, metrics.len(), metrics["valid__Accuracy"]), (3, true, 2, 0.25));
        let cases = [
            ("train__Loss", Some("train_loss")),
            ("train__Accuracy", Some("train_acc")),
            ("valid__Loss", Some("val_loss")),
            ("val/acc", Some("val_acc")),
            ("Validation__accuracy", Some("val_acc")),
            ("test__Accuracy", None),
            ("train__F1", None),
            ("loss", None),
        ];
        for (name, want) in cases {
            assert_eq!(standard_metric(name), want, "{name}");
        }
    }

    #[test]
    fn bad_lines_are_errors_not_panics() {
        assert!(matches!(EventLine::parse("not json"), Err(EventParseError::Malformed { .. })));
        assert_eq!(
            EventLine::parse(r#"{"v":2,"t":0,"event":"finished","epochs":1,"best_val_acc":0}"#),
            Err(EventParseError::Version(2))
        );
        assert!(EventLine::parse(r#"{"v":1,"t":0,"event":"nope"}"#).is_err());
    }
}
