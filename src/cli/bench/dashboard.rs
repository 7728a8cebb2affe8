//! Dashboard benchmarks, against a real store (SQLite file in a temporary home) and the real router served over TCP:
//!
//! - `ingest`: metric points written through the daemon's batched writer (`store::metrics`, the runners' path) while
//!   the dashboard serves page and live-stream requests, in points per second; then the loss chart of that
//!   1,000,000-point series fetched over HTTP (`web::chart` after downsampling), in milliseconds.
//! - `dashboard`: the sessions page's p99 latency with 10,000 sessions stored while 100 live-stream (SSE) clients
//!   stay connected.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;

use super::Row;
use crate::core::queue::Device;
use crate::core::session::{SessionId, SessionState};
use crate::daemon::Daemon;
use crate::daemon::config::{DaemonConfig, Flags};
use crate::daemon::executor::LocalExecutor;
use crate::store::{MetricRow, NewSession, Store};
use crate::web::{AppState, router};

#[derive(Debug, clap::Args)]
pub struct IngestArgs {
    /// Points to ingest.
    #[arg(long, default_value_t = 1_000_000)]
    pub points: u64,
    /// Points per batch a runner sends.
    #[arg(long, default_value_t = 1_000)]
    pub batch: u64,
    /// Chart fetches to time (the median is reported).
    #[arg(long, default_value_t = 7)]
    pub repeats: u32,
}

#[derive(Debug, clap::Args)]
pub struct DashboardArgs {
    /// Sessions in the store.
    #[arg(long, default_value_t = 10_000)]
    pub sessions: usize,
    /// Live-stream clients kept connected while measuring.
    #[arg(long, default_value_t = 100)]
    pub sse_clients: usize,
    /// Sessions-page requests timed.
    #[arg(long, default_value_t = 200)]
    pub requests: usize,
}

/// Issue 7's goals.
const INGEST_GOAL: f64 = 500_000.0;
const CHART_GOAL_MS: f64 = 50.0;
const PAGE_P99_GOAL_MS: f64 = 50.0;

/// A daemon's store and router on a temporary home, served on 127.0.0.1 (an ephemeral port).
struct Server {
    state: AppState,
    base: String,
    client: reqwest::Client,
    dir: std::path::PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Server {
    async fn start() -> anyhow::Result<Self> {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        let dir = std::env::temp_dir().join(format!("rush-bench-web-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let flags = Flags {
            experiments: Some(dir.join("experiments")),
            user: Some("bench".into()),
            cpu_slots: Some(1),
            gpus: Some(vec![]),
            ..Default::default()
        };
        let config = DaemonConfig::resolve(crate::home::Home::new(dir.join("home")), flags, 0)?.prepare()?;
        let store = Store::open(&config.db).await?;
        // No session is ever started here: the executor is never asked to run anything.
        let daemon = Daemon::new(config, store, Arc::new(LocalExecutor { program: "/bin/false".into() }));
        let state = AppState::new(daemon);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.context("binding a port")?;
        let base = format!("http://{}", listener.local_addr()?);
        let app = router(state.clone());
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                eprintln!("rush bench: the HTTP server stopped: {e}");
            }
        });
        let client = reqwest::Client::builder().pool_max_idle_per_host(256).build()?;
        Ok(Self { state, base, client, dir })
    }

    /// Stores `n` sessions (finished ones, as a busy board has), in batches.
    async fn sessions(&self, n: usize) -> anyhow::Result<Vec<SessionId>> {
        let new = NewSession {
            user: "bench".into(),
            dataset: "bench".into(),
            memo: "a memo of ordinary length for the sessions table".into(),
            priority: 0,
            device: Device::Cpu,
            epochs: 30,
            fork_of: None,
        };
        let home = self.state.home().clone();
        let resolve = |id: &SessionId, _: usize| {
            let spec = crate::core::spec::Spec::parse("bench.yaml", "dataset: bench\nmodel: resnet18\nepochs: 30\n");
            match spec {
                Ok(spec) => serde_json::to_string(&crate::core::spec::ResolvedSpec {
                    session: id.to_string(),
                    dataset_path: home.dataset("bench"),
                    init_from: None,
                    runtime: None,
                    spec,
                })
                .unwrap_or_default(),
                Err(_) => String::new(),
            }
        };
        let mut ids = Vec::with_capacity(n);
        while ids.len() < n {
            let take = (n - ids.len()).min(1_000);
            ids.extend(self.state.store().enqueue(None, &vec![new.clone(); take], resolve).await?);
        }
        for id in &ids {
            self.state.store().transition(id, SessionState::Running, Some("cpu0"), None).await?;
            self.state.store().transition(id, SessionState::Succeeded, None, None).await?;
        }
        Ok(ids)
    }

    /// GET `path`; the body's length and the time to the last byte.
    async fn get(&self, path: &str) -> anyhow::Result<(usize, Duration)> {
        let started = Instant::now();
        let resp = self.client.get(format!("{}{path}", self.base)).send().await?;
        anyhow::ensure!(resp.status().is_success(), "GET {path}: {}", resp.status());
        let body = resp.bytes().await?;
        Ok((body.len(), started.elapsed()))
    }

    /// Opens `n` live streams (half on the sessions list, half on `session`'s page), each read until `stop`; returns
    /// a counter of the bytes they received.
    async fn sse_clients(
        &self,
        n: usize,
        session: &SessionId,
        stop: Arc<AtomicBool>,
    ) -> anyhow::Result<Arc<AtomicU64>> {
        let received = Arc::new(AtomicU64::new(0));
        for i in 0..n {
            let path = if i % 2 == 0 { "/sessions/live".to_string() } else { format!("/sessions/{session}/live") };
            let resp = self.client.get(format!("{}{path}", self.base)).send().await?;
            anyhow::ensure!(resp.status().is_success(), "GET {path}: {}", resp.status());
            let (received, stop) = (received.clone(), stop.clone());
            tokio::spawn(async move {
                let mut body = resp.bytes_stream();
                while !stop.load(Ordering::Relaxed) {
                    match tokio::time::timeout(Duration::from_millis(200), body.next()).await {
                        Ok(Some(Ok(chunk))) => {
                            received.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                        }
                        Ok(_) => return,
                        Err(_) => {}
                    }
                }
            });
        }
        Ok(received)
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn ingest(args: &IngestArgs) -> anyhow::Result<Vec<Row>> {
    anyhow::ensure!(args.points > 0 && args.batch > 0 && args.repeats > 0, "--points, --batch, --repeats > 0 please");
    runtime()?.block_on(async {
        let server = Server::start().await?;
        let ids = server.sessions(1).await?;
        let target = ids.first().context("no session stored")?.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let _sse = server.sse_clients(10, &target, stop.clone()).await?;
        // The dashboard keeps serving: one client reloads the session page and the sessions list meanwhile.
        let served = Arc::new(AtomicU64::new(0));
        let reader = {
            let (client, base, stop, served, target) =
                (server.client.clone(), server.base.clone(), stop.clone(), served.clone(), target.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    for path in [format!("/sessions/{target}"), "/sessions".to_string()] {
                        if let Ok(r) = client.get(format!("{base}{path}")).send().await {
                            if r.bytes().await.is_ok() {
                                served.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                }
            })
        };
        let sink = server.state.daemon.metrics.clone();
        let session = target.to_string();
        let started = Instant::now();
        let mut step = 0i64;
        while (step as u64) < args.points {
            let take = args.batch.min(args.points - step as u64) as i64;
            let rows: Vec<MetricRow> = (step..step + take)
                .map(|s| MetricRow {
                    session: session.clone(),
                    step: s,
                    epoch: s / 33_334 + 1,
                    name: "loss".into(),
                    value: 2.0 + (s as f64 * 0.001).sin(),
                    t: s as f64,
                })
                .collect();
            sink.send(rows);
            step += take;
            // A runner yields between batches; so does this loop, letting the writer and the server run.
            tokio::task::yield_now().await;
        }
        sink.flush().await;
        let secs = started.elapsed().as_secs_f64();
        let rate = args.points as f64 / secs;
        stop.store(true, Ordering::Relaxed);
        let _ = reader.await;
        let served = served.load(Ordering::Relaxed);

        let mut times = Vec::new();
        let mut bytes = 0;
        for _ in 0..args.repeats {
            let (n, t) = server.get(&format!("/sessions/{target}/charts/loss.svg")).await?;
            bytes = n;
            times.push(t.as_secs_f64() * 1000.0);
        }
        let chart_ms = super::median(&mut times).unwrap_or(0.0);
        Ok(vec![
            Row {
                name: format!(
                    "metric ingest, {} points in batches of {} while serving ({served} page loads, 10 SSE clients)",
                    args.points, args.batch
                ),
                figure: format!("{rate:.0} points/s"),
                reference: format!("{INGEST_GOAL:.0} points/s goal"),
                ratio: Some(rate / INGEST_GOAL),
                goal: format!(">= {INGEST_GOAL:.0} points/s"),
                met: Some(rate >= INGEST_GOAL),
            },
            Row {
                name: format!(
                    "loss chart over a {}-point series over HTTP (median of {}, {bytes} bytes of SVG)",
                    args.points, args.repeats
                ),
                figure: format!("{chart_ms:.1} ms"),
                reference: format!("{CHART_GOAL_MS:.0} ms goal"),
                ratio: Some(CHART_GOAL_MS / chart_ms.max(1e-9)),
                goal: format!("<= {CHART_GOAL_MS:.0} ms"),
                met: Some(chart_ms <= CHART_GOAL_MS),
            },
        ])
    })
}

pub fn dashboard(args: &DashboardArgs) -> anyhow::Result<Vec<Row>> {
    anyhow::ensure!(args.sessions > 0 && args.requests > 0, "--sessions and --requests > 0 please");
    runtime()?.block_on(async {
        let server = Server::start().await?;
        let started = Instant::now();
        let ids = server.sessions(args.sessions).await?;
        eprintln!("rush bench: {} sessions stored in {:.1} s", ids.len(), started.elapsed().as_secs_f64());
        let stop = Arc::new(AtomicBool::new(false));
        let received = server.sse_clients(args.sse_clients, &ids[0], stop.clone()).await?;
        // Warm-up: the first requests open connections and fill SQLite's page cache.
        for _ in 0..5 {
            server.get("/sessions").await?;
        }
        let mut times = Vec::with_capacity(args.requests);
        let mut rows = 0;
        for _ in 0..args.requests {
            let (n, t) = server.get("/sessions").await?;
            rows = n;
            times.push(t.as_secs_f64() * 1000.0);
        }
        stop.store(true, Ordering::Relaxed);
        times.sort_by(f64::total_cmp);
        let (p50, p99) = (percentile(&times, 50.0), percentile(&times, 99.0));
        Ok(vec![Row {
            name: format!(
                "sessions page, {} sessions stored, {} SSE clients connected ({} B streamed), {} requests, p50 {p50:.1} \
                 ms, page {rows} B",
                args.sessions,
                args.sse_clients,
                received.load(Ordering::Relaxed),
                args.requests
            ),
            figure: format!("p99 {p99:.1} ms"),
            reference: format!("{PAGE_P99_GOAL_MS:.0} ms goal"),
            ratio: Some(PAGE_P99_GOAL_MS / p99.max(1e-9)),
            goal: format!("p99 <= {PAGE_P99_GOAL_MS:.0} ms"),
            met: Some(p99 <= PAGE_P99_GOAL_MS),
        }])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_take_the_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v[..10], 99.0), 10.0);
        assert_eq!(percentile(&[], 99.0), 0.0);
    }
}
