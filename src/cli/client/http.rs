//! The CLI's side of the daemon's JSON API: finds the daemon (`--url`, else the home's `daemon.addr`), sends requests,
//! and turns failures into one-line reasons (not running, unknown session, ...).

use std::path::{Path, PathBuf};
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

/// Why there is no daemon to talk to, and where one runs if one does: the home was another (`--home`, `RUSH_HOME`).
fn no_daemon(home: &Path) -> anyhow::Error {
    let shown = match std::path::absolute(home) {
        Ok(abs) if abs != home => format!("{} ({})", home.display(), abs.display()),
        _ => home.display().to_string(),
    };
    let elsewhere: Vec<PathBuf> =
        running_daemon_homes().into_iter().filter(|h| h.join("daemon.addr").is_file()).collect();
    match elsewhere.as_slice() {
        [] => anyhow::anyhow!(
            "no rush daemon is running for home {shown}: start one with `rush daemon`, or name the home of one that \
             runs with --home DIR (or RUSH_HOME=DIR), or its address with --url"
        ),
        [one] => anyhow::anyhow!(
            "no rush daemon is running for home {shown}, but one runs for home {0}: pass --home {0} (or set \
             RUSH_HOME={0})",
            one.display()
        ),
        many => anyhow::anyhow!(
            "no rush daemon is running for home {shown}; daemons run for homes {}: pass one with --home DIR (or set \
             RUSH_HOME=DIR)",
            many.iter().map(|h| h.display().to_string()).collect::<Vec<_>>().join(", ")
        ),
    }
}

/// The homes of the `rush daemon` processes this user may inspect (`/proc`), sorted, each once.
fn running_daemon_homes() -> Vec<PathBuf> {
    let Ok(procs) = std::fs::read_dir("/proc") else { return Vec::new() };
    let mut homes: Vec<PathBuf> = procs
        .flatten()
        .filter(|p| p.file_name().to_str().is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit())))
        .filter_map(|p| {
            let words = |file: &str| -> Option<Vec<String>> {
                let bytes = std::fs::read(p.path().join(file)).ok()?;
                Some(
                    bytes
                        .split(|&b| b == 0)
                        .filter(|w| !w.is_empty())
                        .map(|w| String::from_utf8_lossy(w).into())
                        .collect(),
                )
            };
            let cmdline = words("cmdline")?;
            let environ = words("environ").unwrap_or_default();
            let cwd = std::fs::read_link(p.path().join("cwd")).ok()?;
            daemon_home(&cmdline, &environ, &cwd)
        })
        .collect();
    homes.sort();
    homes.dedup();
    homes
}

/// The home of a process if it is `rush daemon`: its `--home`, else a non-empty `RUSH_HOME`, else `.rush`, relative to
/// its working folder `cwd`.
pub fn daemon_home(cmdline: &[String], environ: &[String], cwd: &Path) -> Option<PathBuf> {
    let program = Path::new(cmdline.first()?).file_name()?.to_str()?;
    if program != "rush" || !cmdline.iter().skip(1).any(|a| a == "daemon") {
        return None;
    }
    let flag = cmdline.iter().enumerate().find_map(|(i, a)| match a.strip_prefix("--home") {
        Some("") => cmdline.get(i + 1).cloned(),
        Some(rest) => rest.strip_prefix('=').map(str::to_string),
        None => None,
    });
    let env = environ.iter().find_map(|e| e.strip_prefix("RUSH_HOME=")).filter(|h| !h.is_empty()).map(str::to_string);
    let home = PathBuf::from(flag.or(env).unwrap_or_else(|| ".rush".to_string()));
    Some(if home.is_absolute() { home } else { cwd.join(home) })
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
                let addr = std::fs::read_to_string(&file).map_err(|_| no_daemon(global.home.root()))?;
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
        self.send_response(resp)
    }

    /// A response, or its error message when it is not a success.
    fn send_response(&self, resp: Response) -> anyhow::Result<Response> {
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

    /// A GET whose 404 is an answer (`None`), not an error.
    pub fn get_optional<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<Option<T>> {
        let req = self.request(Method::GET, path);
        let resp =
            req.send().map_err(|e| anyhow::anyhow!("request to the rush daemon at {} failed: {e}", self.base))?;
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        Ok(Some(self.send_response(resp)?.json().context("reading the daemon's answer")?))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split(' ').map(str::to_string).collect()
    }

    #[test]
    fn a_daemon_s_home_is_read_from_its_command_line_environment_and_folder() {
        let cwd = Path::new("/work");
        let home = |cmd: &str, env: &str| daemon_home(&words(cmd), &words(env), cwd);
        assert_eq!(home("/usr/bin/rush daemon --home /h", ""), Some(PathBuf::from("/h")));
        assert_eq!(home("rush --home=rel daemon", "RUSH_HOME=/ignored"), Some(PathBuf::from("/work/rel")));
        assert_eq!(home("./rush daemon --bind 127.0.0.1:0", "X=1 RUSH_HOME=/env"), Some(PathBuf::from("/env")));
        assert_eq!(home("rush daemon", "RUSH_HOME="), Some(PathBuf::from("/work/.rush")));
        assert_eq!(home("rush ps", ""), None, "not a daemon");
        assert_eq!(home("python daemon", ""), None, "not rush");
    }
}
