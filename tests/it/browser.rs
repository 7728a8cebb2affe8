//! A real browser for the dashboard tests: headless Chromium (Debian's `chromium` and `chromium-driver`, installed by
//! `scripts/setup.sh`) driven over WebDriver by fantoccini. Without the browser a test that asks for one fails; it
//! never skips. Screenshots are kept as artifacts (`$RUSH_ARTIFACTS`, else the cargo target's tmp dir).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder};

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// A child process stopped when the test ends, however it ends: SIGTERM first (the daemon shuts down cleanly),
/// SIGKILL after a few seconds.
pub struct Guard(pub Child);

impl Drop for Guard {
    fn drop(&mut self) {
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Headless Chromium behind its chromedriver; `client` drives it. Dropping it stops the driver (close the client
/// first to end the browser cleanly).
pub struct Browser {
    pub client: Client,
    _driver: Guard,
}

impl Browser {
    /// Starts chromedriver on a free port and a headless Chromium with its profile in `profile`.
    pub async fn start(profile: &Path) -> Browser {
        for tool in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                Path::new(tool).exists(),
                "{tool} is missing: install Debian's chromium and chromium-driver (scripts/setup.sh does); this test \
                 never skips"
            );
        }
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let driver = Guard(
            Command::new(CHROMEDRIVER)
                .arg(format!("--port={port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": CHROMIUM,
                "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                         "--disable-background-networking", "--disable-component-update", "--disable-sync",
                         "--disable-dev-shm-usage", "--window-size=1400,1100",
                         format!("--user-data-dir={}", profile.display())],
            }),
        );
        let webdriver = format!("http://127.0.0.1:{port}");
        let client = wait_for("chromedriver", Duration::from_secs(30), || {
            let caps = caps.clone();
            let webdriver = webdriver.clone();
            async move {
                ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                    .capabilities(caps)
                    .connect(&webdriver)
                    .await
                    .ok()
            }
        })
        .await;
        Browser { client, _driver: driver }
    }
}

/// Where screenshots go.
pub fn artifacts() -> PathBuf {
    let dir = std::env::var_os("RUSH_ARTIFACTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("artifacts"));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Polls `probe` every 250 ms until it gives a value; panics naming `what` after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

pub async fn js_number(c: &Client, script: &str) -> Option<i64> {
    c.execute(script, vec![]).await.ok()?.as_i64()
}

pub async fn js_string(c: &Client, script: &str) -> Option<String> {
    c.execute(script, vec![]).await.ok()?.as_str().map(str::to_string)
}

/// Saves a screenshot of the page as `name` among the artifacts.
pub async fn screenshot(c: &Client, name: &str) {
    let png = c.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    std::fs::write(artifacts().join(name), png).unwrap();
}
