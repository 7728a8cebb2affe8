//! The system page (`/system`: folders, slots, queue, GPUs) and the same figures for Prometheus (`/metrics`).

use askama::Template;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use super::{AppState, Chrome, PageResult, html, progress_of, progress_text, session_url};
use crate::core::session::{SessionId, SessionState};
use crate::daemon::Task;
use crate::web::{gpus, host, view};

pub struct SlotRow {
    slot: String,
    session: String,
    url: Option<String>,
    state: &'static str,
    progress: String,
}

pub struct GpuView {
    index: u32,
    name: String,
    util: u32,
    mem_percent: u64,
    memory: String,
    temperature: String,
}

#[derive(Template)]
#[template(path = "system.html")]
struct SystemTemplate {
    chrome: Chrome,
    home: String,
    experiments: String,
    queue_depth: i64,
    slots: Vec<SlotRow>,
    counts: Vec<(&'static str, i64)>,
    gpus: Vec<GpuView>,
    gpu_note: Option<String>,
    host: HostView,
}

/// The host's CPU, memory and disk, formatted (empty where a figure could not be read).
pub struct HostView {
    cpus: usize,
    load: String,
    memory: String,
    mem_percent: u64,
    disk: String,
    disk_percent: u64,
}

impl HostView {
    fn new(h: &host::HostSample) -> Self {
        let share = |(used, total): (u64, u64)| (used * 100).checked_div(total).unwrap_or(0);
        let amount =
            |(used, total): (u64, u64)| format!("{} / {}", view::bytes(used as i64), view::bytes(total as i64));
        HostView {
            cpus: h.cpus,
            load: h.load.map(|[a, b, c]| format!("{a:.2} {b:.2} {c:.2}")).unwrap_or_default(),
            memory: h.memory.map(amount).unwrap_or_default(),
            mem_percent: h.memory.map(share).unwrap_or(0),
            disk: h.disk.map(amount).unwrap_or_default(),
            disk_percent: h.disk.map(share).unwrap_or(0),
        }
    }
}

pub(super) async fn system_page(State(state): State<AppState>) -> PageResult {
    let now = crate::store::now();
    let mut slots = Vec::new();
    for s in state.daemon.slots() {
        let row = match s.session.as_deref().and_then(|id| id.parse::<SessionId>().ok()) {
            Some(id) => state.store().session(&id).await?,
            None => None,
        };
        slots.push(SlotRow {
            slot: s.slot,
            url: s.session.as_deref().map(session_url),
            session: s.session.unwrap_or_default(),
            state: row.as_ref().map(|r| r.state.as_str()).unwrap_or(""),
            progress: row.as_ref().map(|r| progress_text(&progress_of(r, now))).unwrap_or_default(),
        });
    }
    let counts = state.store().session_counts().await?;
    let queue_depth = counts.iter().find(|c| c.0 == SessionState::Queued).map(|c| c.1).unwrap_or(0);
    let (gpus, gpu_note) = match tokio::task::spawn_blocking(gpus::sample).await {
        Ok(gpus::GpuReport::Gpus(list)) => (list, None),
        Ok(gpus::GpuReport::Unavailable(why)) => (Vec::new(), Some(why)),
        Err(e) => (Vec::new(), Some(format!("GPU probe failed: {e}"))),
    };
    let root = state.home().root().to_path_buf();
    let host = tokio::task::spawn_blocking(move || host::sample(&root)).await.unwrap_or_default();
    html(&SystemTemplate {
        chrome: Chrome::new(&state, "system"),
        home: state.home().root().display().to_string(),
        experiments: state.daemon.config.experiments.display().to_string(),
        queue_depth,
        slots,
        counts: counts.into_iter().map(|(s, c)| (s.as_str(), c)).collect(),
        gpus: gpus
            .into_iter()
            .map(|g| GpuView {
                index: g.index,
                name: g.name,
                util: g.util_percent,
                mem_percent: (g.memory_used * 100).checked_div(g.memory_total).unwrap_or(0),
                memory: format!("{} / {}", view::bytes(g.memory_used as i64), view::bytes(g.memory_total as i64)),
                temperature: g.temperature_c.map(|t| format!("{t} °C")).unwrap_or_default(),
            })
            .collect(),
        gpu_note,
        host: HostView::new(&host),
    })
}

/// A Prometheus label value, escaped.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

pub(super) async fn prometheus(State(state): State<AppState>) -> PageResult {
    use std::fmt::Write;
    let counts = state.store().session_counts().await?;
    let rows = state.store().metric_rows_written().await?;
    let slots = state.daemon.slots();
    let mut out = String::new();
    out.push_str("# HELP rush_sessions Sessions by state.\n# TYPE rush_sessions gauge\n");
    for (s, c) in &counts {
        let _ = writeln!(out, "rush_sessions{{state=\"{s}\"}} {c}");
    }
    let queued = counts.iter().find(|c| c.0 == SessionState::Queued).map(|c| c.1).unwrap_or(0);
    let _ = writeln!(
        out,
        "# HELP rush_queue_depth Sessions waiting for a slot.\n# TYPE rush_queue_depth gauge\nrush_queue_depth {queued}"
    );
    let _ = writeln!(
        out,
        "# HELP rush_metric_rows_written_total Metric rows written to the store.\n\
         # TYPE rush_metric_rows_written_total counter\nrush_metric_rows_written_total {rows}"
    );
    out.push_str("# HELP rush_slot_busy Whether a worker slot runs a session.\n# TYPE rush_slot_busy gauge\n");
    for s in &slots {
        let _ = writeln!(out, "rush_slot_busy{{slot=\"{}\"}} {}", label(&s.slot), u8::from(s.session.is_some()));
    }
    out.push_str(
        "# HELP rush_task_panics_total Panics caught in the daemon's loops (each logged; the loop went on).\n\
         # TYPE rush_task_panics_total counter\n",
    );
    for task in Task::ALL {
        let _ =
            writeln!(out, "rush_task_panics_total{{task=\"{}\"}} {}", task.as_str(), state.daemon.panics.count(task));
    }
    if let Ok(gpus::GpuReport::Gpus(list)) = tokio::task::spawn_blocking(gpus::sample).await {
        out.push_str("# HELP rush_gpu_utilization_percent GPU utilisation (NVML).\n");
        out.push_str("# TYPE rush_gpu_utilization_percent gauge\n");
        for g in &list {
            let _ = writeln!(
                out,
                "rush_gpu_utilization_percent{{gpu=\"{}\",name=\"{}\"}} {}",
                g.index,
                label(&g.name),
                g.util_percent
            );
        }
        out.push_str("# HELP rush_gpu_memory_used_bytes GPU memory in use (NVML).\n");
        out.push_str("# TYPE rush_gpu_memory_used_bytes gauge\n");
        for g in &list {
            let _ = writeln!(out, "rush_gpu_memory_used_bytes{{gpu=\"{}\"}} {}", g.index, g.memory_used);
        }
        out.push_str("# HELP rush_gpu_memory_total_bytes GPU memory installed (NVML).\n");
        out.push_str("# TYPE rush_gpu_memory_total_bytes gauge\n");
        for g in &list {
            let _ = writeln!(out, "rush_gpu_memory_total_bytes{{gpu=\"{}\"}} {}", g.index, g.memory_total);
        }
    }
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], out).into_response())
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;

    use super::super::fixture::Fixture;
    use super::*;

    #[tokio::test]
    async fn the_system_page_shows_the_slots_the_queue_and_the_folders() {
        let f = Fixture::new().await;
        let page = f.get("/system").await;
        assert_eq!(page.status, StatusCode::OK);
        assert!(page.body.contains("queue depth <b>1</b>"), "{}", page.body);
        assert!(page.body.contains(&f.state.home().root().display().to_string()), "the home folder");
        assert!(page.body.contains("<td class=\"mono\">cpu0</td>"), "the slot");
        assert!(page.body.contains("<span class=\"badge running\">running</span></td><td class=\"num\">1</td>"));
        // The host is always shown: CPU cores, memory and the home's disk.
        for fact in ["<th>CPU cores</th>", "<th>Memory</th>", "<th>Disk (home)</th>"] {
            assert!(page.body.contains(fact), "{fact}: {}", page.body);
        }
        // Without a GPU driver: plain words, not a loader's error.
        if let gpus::GpuReport::Unavailable(why) = gpus::sample() {
            assert!(page.body.contains("no NVIDIA GPU") && why == gpus::NO_GPU, "{why}");
            assert!(!page.body.contains("libnvidia") && !page.body.contains(".so"), "{}", page.body);
        }
    }

    #[tokio::test]
    async fn prometheus_reads_the_counts_as_they_change() {
        let f = Fixture::new().await;
        f.state.daemon.stop_session(&f.queued).await.unwrap();
        let metrics = f.get("/metrics").await;
        assert_eq!(metrics.status, StatusCode::OK);
        assert!(metrics.header("content-type").starts_with("text/plain; version=0.0.4"));
        for line in [
            "rush_sessions{state=\"stopped\"} 1",
            "rush_queue_depth 0",
            "rush_slot_busy{slot=\"cpu0\"} 0",
            "rush_task_panics_total{task=\"scheduler\"} 0",
            "rush_task_panics_total{task=\"submissions\"} 0",
        ] {
            assert!(metrics.body.lines().any(|l| l == line), "{line}: {}", metrics.body);
        }
    }

    /// A failure point makes the scheduler's next tick panic: the loop goes on and `/metrics` counts it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_caught_panic_is_counted_in_metrics() {
        let f = Fixture::new().await;
        let daemon = f.state.daemon.clone();
        daemon.fail_ticks.store(1, std::sync::atomic::Ordering::SeqCst);
        let scheduler = tokio::spawn(crate::daemon::scheduler::run(daemon.clone()));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while daemon.panics.count(Task::Scheduler) == 0 {
            assert!(std::time::Instant::now() < deadline, "the failure point never fired");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let metrics = f.get("/metrics").await;
        assert!(metrics.body.lines().any(|l| l == "rush_task_panics_total{task=\"scheduler\"} 1"), "{}", metrics.body);
        assert!(!scheduler.is_finished(), "the scheduler loop survived its panic");
        daemon.shutdown.cancel();
        scheduler.await.unwrap();
    }

    #[test]
    fn prometheus_labels_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
