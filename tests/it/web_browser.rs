//! The dashboard in a real browser (see `browser`): headless Chromium drives the real daemon with a real training
//! child. It opens the sessions page and sorts it, follows the running session, sees a chart point and a log line
//! arrive over SSE and the learning-rate chart, clicks stop and sees the state change. A second test looks at what a
//! trained checkpoint gets wrong (the per-class view and its sorting, the confusion pairs, the gallery whose images
//! load) and at the dataset's page. Screenshots are kept as artifacts.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use fantoccini::Locator;

use crate::browser::{Browser, Guard, js_number, js_string, screenshot, wait_for};

fn rush() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rush"))
}

fn run_ok(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn daemon_log(tmp: &Path) -> String {
    std::fs::read_to_string(tmp.join("daemon.log")).unwrap_or_default()
}

/// What the fork box should offer for session 1: `best`, `last`, then the checkpoints the API lists, newest first.
async fn fork_choices(base: &str) -> Option<Vec<String>> {
    let list: serde_json::Value =
        reqwest::get(format!("{base}/api/sessions/browser/emoji/1/checkpoints")).await.ok()?.json().await.ok()?;
    let mut epochs: Vec<i64> = list.as_array()?.iter().filter_map(|c| c["epoch"].as_i64()).collect();
    epochs.sort_unstable_by(|a, b| b.cmp(a));
    Some(["best".to_string(), "last".to_string()].into_iter().chain(epochs.iter().map(i64::to_string)).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_follows_a_session_live_and_stops_it_in_a_browser() {
    let tmp = tempfile::tempdir().unwrap();
    let (home, exp, data) = (tmp.path().join("home"), tmp.path().join("exp"), tmp.path().join("synth"));
    run_ok(rush().args(["dataset", "synth", "--out"]).arg(&data).args([
        "--train",
        "300",
        "--test",
        "60",
        "--classes",
        "8",
        "--width",
        "48",
        "--height",
        "48",
        "--quiet",
    ]));
    run_ok(rush().arg("--home").arg(&home).args(["dataset", "push", "emoji"]).arg(&data));

    let log = std::fs::File::create(tmp.path().join("daemon.log")).unwrap();
    let daemon = Guard(
        rush()
            .arg("--home")
            .arg(&home)
            .args(["daemon", "--bind", "127.0.0.1:0", "--user", "browser", "--cpu-slots", "1", "--experiments"])
            .arg(&exp)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let addr_file = home.join("daemon.addr");
    let addr = wait_for("the daemon's address", Duration::from_secs(60), || async {
        std::fs::read_to_string(&addr_file).ok().map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
    })
    .await;
    let base = format!("http://{addr}");
    // Enough epochs to still be training when the browser stops it.
    std::fs::write(
        exp.join("browser.yaml"),
        "dataset: emoji\nmemo: \"live <b>browser</b> test\"\nmodel: baseline_cnn\nimage_size: 32\nbatch_size: 16\n\
         epochs: 300\noptimizer: {name: sgd, lr: 0.05, momentum: 0.9}\nschedule: {name: constant}\n\
         checkpoints: {keep_best: 1, keep_last: true}\n",
    )
    .unwrap();

    let browser = Browser::start(&tmp.path().join("chromium-profile")).await;
    let c = &browser.client;

    // The sessions page shows the session, and its live refresh shows it running.
    c.goto(&format!("{base}/sessions")).await.unwrap();
    let row = "document.querySelector('tr[data-id=\"browser/emoji/1\"] .badge')";
    let state = wait_for("the session to run (shown on the sessions page)", Duration::from_secs(120), || async {
        js_string(c, &format!("return {row} ? {row}.textContent : ''")).await.filter(|s| s == "running")
    })
    .await;
    assert_eq!(state, "running", "{}", daemon_log(tmp.path()));
    let memo = js_string(c, "return document.querySelector('tr[data-id=\"browser/emoji/1\"] .memo').innerHTML").await;
    assert_eq!(memo.as_deref(), Some("live &lt;b&gt;browser&lt;/b&gt; test"), "the memo is escaped");
    screenshot(c, "dashboard-sessions.png").await;

    // The list follows the store without a reload: a second session appears queued (the one slot is busy), then is
    // stopped through the API; its row, the state counts and the total change in place.
    c.execute("window.__listNotReloaded = true; return 1", vec![]).await.unwrap();
    std::fs::write(
        exp.join("waiting.yaml"),
        "dataset: emoji\nmemo: waits\nmodel: baseline_cnn\nimage_size: 32\nepochs: 2\noptimizer: {name: sgd, lr: 0.05}\n",
    )
    .unwrap();
    let row2 = "document.querySelector('tr[data-id=\"browser/emoji/2\"] .badge')";
    let badge2 = format!("return {row2} ? {row2}.textContent : ''");
    wait_for("the queued session's row to appear live", Duration::from_secs(60), || async {
        js_string(c, &badge2).await.filter(|s| s == "queued")
    })
    .await;
    let pills = "return Array.prototype.map.call(document.querySelectorAll('#state-pills a'), \
                 function (a) { return a.textContent.trim(); }).join(',')";
    let total = "return document.getElementById('sessions-total').textContent.trim()";
    wait_for("the counts to follow the new session", Duration::from_secs(30), || async {
        js_string(c, pills).await.filter(|p| p.contains("all2") && p.contains("queued1"))
    })
    .await;
    assert_eq!(js_string(c, total).await.as_deref(), Some("2 sessions"));
    let stopped =
        reqwest::Client::new().post(format!("{base}/api/sessions/browser/emoji/2/stop")).send().await.unwrap();
    assert!(stopped.status().is_success(), "{:?}", stopped.text().await);
    wait_for("the stopped row without a reload", Duration::from_secs(30), || async {
        js_string(c, &badge2).await.filter(|s| s == "stopped")
    })
    .await;
    let counts = wait_for("the counts to follow the stop", Duration::from_secs(30), || async {
        js_string(c, pills).await.filter(|p| p.contains("stopped1") && p.contains("queued0"))
    })
    .await;
    eprintln!("state counts after the stop: {counts}");
    let marker = c.execute("return window.__listNotReloaded === true", vec![]).await.unwrap();
    assert_eq!(marker, serde_json::Value::Bool(true), "the sessions page was not reloaded");

    // The columns sort with a click on their header, and again the other way (newest first before either).
    let order = "return Array.prototype.map.call(document.querySelectorAll('#sessions tbody tr[data-id]'), \
                 function (r) { return r.dataset.id; }).join(',')";
    assert_eq!(js_string(c, order).await.as_deref(), Some("browser/emoji/2,browser/emoji/1"));
    let click_memo = "Array.prototype.find.call(document.querySelectorAll('#sessions th'), \
                      function (t) { return t.textContent.trim() === 'Memo'; }).click(); return 1";
    c.execute(click_memo, vec![]).await.unwrap();
    wait_for("the rows sorted by memo, A first", Duration::from_secs(10), || async {
        js_string(c, order).await.filter(|o| o == "browser/emoji/1,browser/emoji/2")
    })
    .await;
    c.execute(click_memo, vec![]).await.unwrap();
    wait_for("the rows sorted by memo the other way", Duration::from_secs(10), || async {
        js_string(c, order).await.filter(|o| o == "browser/emoji/2,browser/emoji/1")
    })
    .await;
    let sorted = "return document.querySelector('#sessions th[aria-sort]').textContent.trim() + ' ' + \
                  document.querySelector('#sessions th[aria-sort]').getAttribute('aria-sort')";
    assert_eq!(js_string(c, sorted).await.as_deref(), Some("Memo descending"));
    screenshot(c, "dashboard-sessions-sorted.png").await;

    // The header names the address the daemon really listens on (`--bind 127.0.0.1:0` chose the port).
    let host = js_string(c, "return document.querySelector('header .host').textContent.trim()").await;
    assert_eq!(host, Some(format!("browser @ {addr}")));

    // Follow it.
    c.find(Locator::Css("a[href=\"/sessions/browser/emoji/1\"]")).await.unwrap().click().await.unwrap();
    wait_for("the live stream", Duration::from_secs(30), || async {
        js_number(c, "return document.querySelector('#live.on') ? 1 : 0").await.filter(|n| *n == 1)
    })
    .await;
    // Its run time ticks.
    let run_time = "return document.getElementById('elapsed').textContent";
    let first = js_string(c, run_time).await.unwrap();
    wait_for("the run time to tick", Duration::from_secs(10), || async {
        js_string(c, run_time).await.filter(|t| *t != first)
    })
    .await;
    let points = "var p = document.querySelector('#chart-loss polyline'); \
                  return p ? p.getAttribute('points').split(' ').filter(function (s) { return s; }).length : 0";
    let lines =
        "return document.getElementById('log').textContent.split('\\n').filter(function (s) { return s; }).length";
    let (points0, lines0) = (js_number(c, points).await.unwrap(), js_number(c, lines).await.unwrap());
    // Without reloading: a marker set now must survive until the new point and line are seen.
    c.execute("window.__notReloaded = true; return 1", vec![]).await.unwrap();
    let points1 = wait_for("a new chart point over SSE", Duration::from_secs(90), || async {
        js_number(c, points).await.filter(|n| *n > points0)
    })
    .await;
    let lines1 = wait_for("a new log line over SSE", Duration::from_secs(90), || async {
        js_number(c, lines).await.filter(|n| *n > lines0)
    })
    .await;
    let marker = c.execute("return window.__notReloaded === true", vec![]).await.unwrap();
    assert_eq!(marker, serde_json::Value::Bool(true), "the page was not reloaded");
    eprintln!("chart points {points0} -> {points1}, log lines {lines0} -> {lines1}");
    // The learning rate is charted per step too (constant here: sgd without a schedule).
    let lr = "var s = document.querySelector('#chart-lr svg'); var p = s && s.querySelector('polyline'); \
              return s && p ? s.getAttribute('aria-label') + ' ' + \
              p.getAttribute('points').split(' ').filter(function (x) { return x; }).length : ''";
    let drawn = wait_for("the lr chart", Duration::from_secs(30), || async {
        js_string(c, lr).await.filter(|t| t.starts_with("Learning rate ") && !t.ends_with(" 0"))
    })
    .await;
    eprintln!("lr chart: {drawn} points");
    screenshot(c, "dashboard-session-running.png").await;

    let system = reqwest::get(format!("{base}/system")).await.unwrap().text().await.unwrap();
    assert!(system.contains("cpu0") && system.contains("browser/emoji/1"), "the system page shows what runs where");
    let metrics = reqwest::get(format!("{base}/metrics")).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("rush_sessions{state=\"running\"} 1"), "{metrics}");

    // Checkpoints while it trains (keep_best 1 + last): every `checkpoint` event names what the store keeps after
    // retention, the new one included and the pruned one gone; a second listener records them.
    let session_page = c.current_url().await.unwrap();
    c.execute(
        "window.__cps = []; var es = new EventSource('/sessions/browser/emoji/1/live'); \
         es.addEventListener('checkpoint', function (e) { window.__cps.push(JSON.parse(e.data)); }); return 1",
        vec![],
    )
    .await
    .unwrap();
    let options = "return Array.prototype.map.call(document.querySelectorAll('#fork-checkpoint option'), \
                   function (o) { return o.value; }).join(',')";
    let options_at_load = js_string(c, options).await.unwrap();
    wait_for("three checkpoint events", Duration::from_secs(180), || async {
        js_number(c, "return window.__cps.length").await.filter(|n| *n >= 3)
    })
    .await;
    let events = c.execute("return window.__cps", vec![]).await.unwrap();
    for e in events.as_array().unwrap() {
        let saved: Vec<i64> = e["saved"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
        assert!(saved.contains(&e["epoch"].as_i64().unwrap()), "the new checkpoint is in the store: {e}");
        assert!(saved.len() <= 2, "retention has pruned before the event: {e}");
    }
    // The fork box follows the store (its epochs are what the API lists), and its default never goes stale.
    let now = wait_for("the fork box to follow the checkpoints", Duration::from_secs(60), || async {
        let want: Vec<String> = fork_choices(&base).await?;
        js_string(c, options).await.filter(|o| *o == want.join(","))
    })
    .await;
    assert_ne!(now, options_at_load, "the fork box was redrawn");
    assert_eq!(js_string(c, "return document.getElementById('fork-checkpoint').value").await.as_deref(), Some("best"));
    c.find(Locator::Id("fork")).await.unwrap().click().await.unwrap();
    let forked = wait_for("the fork's page", Duration::from_secs(30), || async {
        let url = c.current_url().await.ok()?;
        (url.path() == "/sessions/browser/emoji/3").then_some(url)
    })
    .await;
    let error = js_string(c, "var e = document.querySelector('.card.error'); return e ? e.textContent : ''").await;
    assert_eq!(error.as_deref(), Some(""), "forking with the default choice works ({forked})");
    c.goto(session_page.as_str()).await.unwrap();
    wait_for("the live stream again", Duration::from_secs(30), || async {
        js_number(c, "return document.querySelector('#live.on') ? 1 : 0").await.filter(|n| *n == 1)
    })
    .await;

    // Stop it with the button; the state changes on the page.
    c.find(Locator::Id("stop")).await.unwrap().click().await.unwrap();
    wait_for("the stopped state on the page", Duration::from_secs(60), || async {
        js_string(c, "var b = document.getElementById('state'); return b ? b.textContent : ''")
            .await
            .filter(|s| s == "stopped")
    })
    .await;
    screenshot(c, "dashboard-session-stopped.png").await;
    // The checkpoint table is what the store holds.
    let table = "return Array.prototype.map.call(document.querySelectorAll('#checkpoints tbody td.mono'), \
                 function (td) { return td.textContent.trim().split(' ')[0]; }).join(',')";
    wait_for("the checkpoint table to match the store", Duration::from_secs(30), || async {
        let want: Vec<String> = fork_choices(&base).await?;
        let mut shown: Vec<i64> = js_string(c, table).await?.split(',').filter_map(|n| n.parse().ok()).collect();
        shown.sort_unstable_by(|a, b| b.cmp(a));
        let shown: Vec<String> = shown.iter().map(i64::to_string).collect();
        (!shown.is_empty() && shown[..] == want[2..]).then_some(())
    })
    .await;
    let api: serde_json::Value =
        reqwest::get(format!("{base}/api/sessions/browser/emoji/1")).await.unwrap().json().await.unwrap();
    assert!(api.to_string().contains("\"stopped\""), "{api}");

    // The other pages, as a person would look at them.
    for (path, name) in [("/system", "dashboard-system.png"), ("/datasets", "dashboard-datasets.png")] {
        c.goto(&format!("{base}{path}")).await.unwrap();
        screenshot(c, name).await;
    }
    c.clone().close().await.unwrap();
    drop(daemon);
}

/// The images (of those `selector` matches, the first `n`) once each has loaded with a real size: how many, or `None`
/// while one is still loading or broken.
async fn loaded_images(c: &fantoccini::Client, selector: &str, n: usize) -> Option<i64> {
    let script = format!(
        "var all = Array.prototype.slice.call(document.querySelectorAll('{selector}'), 0, {n}); \
         return all.length > 0 && all.every(function (i) {{ return i.complete && i.naturalWidth > 0; }}) ? all.length : 0"
    );
    js_number(c, &script).await.filter(|k| *k > 0)
}

/// The numbers of a column of the per-class table (`td.acc` values, or the cells of column `k`), in page order.
const ACCURACIES: &str = "return Array.prototype.map.call(document.querySelectorAll('#classes tbody td.acc'), \
                          function (td) { return td.getAttribute('data-value'); }).join(',')";

fn numbers(text: &str) -> Vec<f64> {
    text.split(',').filter_map(|v| v.parse().ok()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_checkpoint_gets_wrong_and_the_dataset_page_in_a_browser() {
    let tmp = tempfile::tempdir().unwrap();
    let (home, exp, data) = (tmp.path().join("home"), tmp.path().join("exp"), tmp.path().join("synth"));
    run_ok(rush().args(["dataset", "synth", "--out"]).arg(&data).args([
        "--train",
        "300",
        "--test",
        "60",
        "--classes",
        "8",
        "--width",
        "48",
        "--height",
        "48",
        "--quiet",
    ]));
    run_ok(rush().arg("--home").arg(&home).args(["dataset", "push", "emoji"]).arg(&data));
    let log = std::fs::File::create(tmp.path().join("daemon.log")).unwrap();
    let daemon = Guard(
        rush()
            .arg("--home")
            .arg(&home)
            .args(["daemon", "--bind", "127.0.0.1:0", "--user", "browser", "--cpu-slots", "1", "--experiments"])
            .arg(&exp)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let addr_file = home.join("daemon.addr");
    let addr = wait_for("the daemon's address", Duration::from_secs(60), || async {
        std::fs::read_to_string(&addr_file).ok().map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
    })
    .await;
    let base = format!("http://{addr}");
    // One short epoch at a small learning rate: a checkpoint that still confuses classes.
    std::fs::write(
        exp.join("wrong.yaml"),
        "dataset: emoji\nmodel: baseline_cnn\nimage_size: 32\nbatch_size: 32\nepochs: 1\nprecision: fp32\n\
         optimizer: {name: sgd, lr: 0.001}\nschedule: {name: constant}\n",
    )
    .unwrap();
    wait_for("the session to succeed", Duration::from_secs(300), || async {
        let s: serde_json::Value =
            reqwest::get(format!("{base}/api/sessions/browser/emoji/1")).await.ok()?.json().await.ok()?;
        assert!(s["state"] != "failed", "{s}\n{}", daemon_log(tmp.path()));
        (s["state"] == "succeeded").then_some(())
    })
    .await;

    let browser = Browser::start(&tmp.path().join("chromium-profile")).await;
    let c = &browser.client;

    // From the session page to what its best checkpoint gets wrong.
    c.goto(&format!("{base}/sessions/browser/emoji/1")).await.unwrap();
    c.find(Locator::Id("analysis-link")).await.unwrap().click().await.unwrap();
    let rows = wait_for("the per-class table", Duration::from_secs(30), || async {
        js_number(c, "return document.querySelectorAll('#classes tbody tr[data-class]').length")
            .await
            .filter(|n| *n > 0)
    })
    .await;
    let ascending = numbers(&js_string(c, ACCURACIES).await.unwrap());
    assert_eq!(ascending.len() as i64, rows);
    assert!(ascending.windows(2).all(|w| w[0] <= w[1]), "the least accurate first: {ascending:?}");
    screenshot(c, "dashboard-analysis.png").await;
    // Sortable: the accuracy header turns the order, the support header sorts by support.
    c.find(Locator::Css("th[data-sort=\"accuracy\"] a")).await.unwrap().click().await.unwrap();
    let descending = wait_for("the accuracy column sorted the other way", Duration::from_secs(30), || async {
        let url = c.current_url().await.ok()?;
        url.query()?.contains("dir=desc").then_some(())?;
        Some(numbers(&js_string(c, ACCURACIES).await?))
    })
    .await;
    assert!(descending.windows(2).all(|w| w[0] >= w[1]), "{descending:?}");
    let mut sorted = ascending.clone();
    sorted.reverse();
    assert_eq!(descending, sorted, "the same rows the other way round");
    c.find(Locator::Css("th[data-sort=\"support\"] a")).await.unwrap().click().await.unwrap();
    let supports = "return Array.prototype.map.call(document.querySelectorAll('#classes tbody tr'), \
                    function (tr) { return tr.children[2].textContent.trim(); }).join(',')";
    let by_support = wait_for("the support column sorted", Duration::from_secs(30), || async {
        c.current_url().await.ok()?.query()?.contains("sort=support").then_some(())?;
        Some(numbers(&js_string(c, supports).await?))
    })
    .await;
    assert_eq!(by_support.len() as i64, rows);
    assert!(by_support.windows(2).all(|w| w[0] >= w[1]), "{by_support:?}");

    // The confusion pairs, each opening the stickers involved: they load.
    let pairs = js_number(c, "return document.querySelectorAll('#confusions tbody tr[data-truth]').length").await;
    assert!(pairs.is_some_and(|n| n > 0), "an undertrained checkpoint confuses classes");
    let (truth, predicted) = (
        js_string(c, "return document.querySelector('#confusions tr[data-truth]').getAttribute('data-truth')").await,
        js_string(c, "return document.querySelector('#confusions tr[data-truth]').getAttribute('data-predicted')")
            .await,
    );
    c.find(Locator::Css("#confusions tr[data-truth] a")).await.unwrap().click().await.unwrap();
    let shown = wait_for("the pair's stickers to load", Duration::from_secs(30), || async {
        loaded_images(c, "#gallery img", 6).await
    })
    .await;
    let url = c.current_url().await.unwrap();
    let query = url.query().unwrap_or_default().to_string();
    assert!(
        query.contains(&format!("truth={}", truth.unwrap()))
            && query.contains(&format!("predicted={}", predicted.unwrap())),
        "{query}"
    );
    let wrong = js_number(c, "return document.querySelectorAll('#gallery figure.sticker.wrong').length").await;
    let all = js_number(c, "return document.querySelectorAll('#gallery figure.sticker').length").await;
    assert!(wrong.is_some() && wrong == all, "a confusion pair holds only wrong predictions");
    let guesses =
        js_number(c, "return document.querySelectorAll('#gallery figure.sticker')[0].querySelectorAll('li').length")
            .await;
    assert_eq!(guesses, Some(3), "the top three predicted tags");
    eprintln!("{shown} images of the pair loaded");
    screenshot(c, "dashboard-gallery.png").await;

    // The dataset page, from the datasets list: its classes with thumbnails that load, and one class's samples.
    c.goto(&format!("{base}/datasets")).await.unwrap();
    c.find(Locator::Css("a[href=\"/datasets/emoji\"]")).await.unwrap().click().await.unwrap();
    let classes = wait_for("the dataset's classes", Duration::from_secs(30), || async {
        js_number(c, "return document.querySelectorAll('#dataset-classes tr[data-tag]').length")
            .await
            .filter(|n| *n > 0)
    })
    .await;
    assert_eq!(classes, 8, "the 8 classes of the synthetic set");
    wait_for("the class thumbnails to load", Duration::from_secs(30), || async {
        loaded_images(c, "#dataset-classes img", 8).await.filter(|n| *n == 8)
    })
    .await;
    screenshot(c, "dashboard-dataset.png").await;
    c.find(Locator::Css("#dataset-classes tr[data-tag] td.name a")).await.unwrap().click().await.unwrap();
    wait_for("a class's samples from each package", Duration::from_secs(30), || async {
        loaded_images(c, "#samples img", 4).await
    })
    .await;
    let keywords = js_number(c, "return document.querySelectorAll('#keywords tbody tr').length").await;
    assert_eq!(keywords, Some(4), "the synthetic tags' keywords in en, ko, ja and fr");
    screenshot(c, "dashboard-dataset-tag.png").await;
    c.clone().close().await.unwrap();
    drop(daemon);
}
