//! The CLI's side of the daemon's JSON API: finds the daemon (`--url`, else the home's `daemon.addr`), sends requests,
//! and turns failures into one-line reasons (not running, unknown session, ...).

use std::time::Duration;

use anyhow::{Context, bail};
use reqwest::Method;
use reqwest::blocking::{Client, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::cli::Global;
use crate::web::api::ErrorBody;

/// A connection to one daemon.
#[derive(Debug)]
pub struct Api {
    base: String,
    token: Option<String>,
    http: Client,
}

impl Api {
    /// Finds the daemon of `global.home` (or `--url`).
    pub fn connect(global: &Global) -> anyhow::Result<Api> {
        let base = match &global.url {
            Some(url) => {
                let parsed = reqwest::Url::parse(url)
                    .map_err(|e| anyhow::anyhow!("--url {url:?} is not an address like http://127.0.0.1:8470 ({e})"))?;
                if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
                    bail!("--url {url:?} is not an address like http://127.0.0.1:8470 (http or https, and a host)");
                }
                url.trim_end_matches('/').to_string()
            }
            None => {
                let file = global.home.daemon_addr_file();
                let addr = std::fs::read_to_string(&file).map_err(|_| {
                    anyhow::anyhow!(
                        "no rush daemon is running for home {} (start one with `rush daemon`, or pass --url)",
                        global.home.root().display()
                    )
                })?;
                format!("http://{}", addr.trim())
            }
        };
        let http = Client::builder().timeout(Duration::from_secs(120)).build().context("HTTP client")?;
        Ok(Api { base, token: global.token.clone(), http })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    fn request(&self, method: Method, path: &str) -> reqwest::blocking::RequestBuilder {
        let mut req = self.http.request(method, format!("{}/api{path}", self.base));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        req
    }

    /// Sends a request; a non-success answer becomes its error message.
    fn send(&self, req: reqwest::blocking::RequestBuilder) -> anyhow::Result<Response> {
        let resp = req.send().map_err(|e| {
            if e.is_connect() {
                anyhow::anyhow!(
                    "cannot reach the rush daemon at {} (is it running? start one with `rush daemon`)",
                    self.base
                )
            } else {
                anyhow::anyhow!("request to the rush daemon at {} failed: {e}", self.base)
            }
        })?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let text = resp.text().unwrap_or_default();
        match serde_json::from_str::<ErrorBody>(&text) {
            Ok(body) => bail!("{}", body.error),
            Err(_) => {
                let text = text.trim();
                if text.starts_with('<') {
                    bail!("{} answered {status} with a web page, not a rush daemon's JSON: is --url right?", self.base)
                }
                let short: String = text.chars().take(300).collect();
                bail!("the daemon answered {status}: {short}{}", if short.len() < text.len() { "..." } else { "" })
            }
        }
    }

    pub fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.send(self.request(Method::GET, path))?.json().context("reading the daemon's answer")
    }

    pub fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> anyhow::Result<T> {
        self.send(self.request(Method::POST, path).json(body))?.json().context("reading the daemon's answer")
    }

    pub fn delete<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.send(self.request(Method::DELETE, path))?.json().context("reading the daemon's answer")
    }

    /// A streaming GET without a time limit (for `logs -f`).
    pub fn stream(&self, path: &str) -> anyhow::Result<Response> {
        let req = self.http.get(format!("{}/api{path}", self.base)).timeout(Duration::from_secs(365 * 24 * 3600));
        let req = match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        };
        self.send(req)
    }
}
