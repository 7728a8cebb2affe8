//! A shared daemon with three users (issue 18), end to end through the real daemon and CLI: tokens from `rush user
//! add`, `rush login`, a member isolated from another member's sessions by id and by listing (404, never 403), an
//! admin who sees all of it, the daily submission limit counted per user, and the board public to anyone.

use std::process::Command;
use std::time::Duration;

use crate::common::{Env, quick_spec, rush_exe, wait_for};

const TRAIN_TIMEOUT: Duration = Duration::from_secs(300);

fn ok(env: &Env, token: &str, args: &[&str]) -> String {
    env.ok_as(token, args)
}

fn fails(env: &Env, token: &str, args: &[&str]) -> String {
    let out = env.cli_as(token, args);
    assert!(!out.status.success(), "rush {} should have failed", args.join(" "));
    String::from_utf8_lossy(&out.stderr).to_string()
}

fn ids(env: &Env, token: &str) -> Vec<String> {
    let list: serde_json::Value = serde_json::from_str(&ok(env, token, &["ps", "-a", "-j"])).unwrap();
    let mut ids: Vec<String> = list.as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap().to_string()).collect();
    ids.sort();
    ids
}

/// GET over HTTP with an optional token: the status and body.
fn get(env: &Env, path: &str, token: Option<&str>) -> (u16, String) {
    let addr = std::fs::read_to_string(env.home.join("daemon.addr")).unwrap();
    let mut req = reqwest::blocking::Client::new().get(format!("http://{}{path}", addr.trim()));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().unwrap();
    (resp.status().as_u16(), resp.text().unwrap())
}

/// `rush user add ARGS`: the token it prints.
fn add(env: &Env, args: &[&str]) -> String {
    env.add_user(args)
}

#[test]
fn three_users_share_one_daemon() {
    let mut env = Env::new();
    // Users added before the daemon starts, and one more while it runs (read at once).
    let team01 = add(&env, &["team01", "--gpus", "2"]);
    let org = add(&env, &["org", "--admin"]);
    let users_file = std::fs::read_to_string(env.home.join("users.yaml")).unwrap();
    assert!(!users_file.contains(&team01) && users_file.contains("team01"), "only digests are kept: {users_file}");
    let config = env.tmp.path().join("rush.yaml");
    std::fs::write(&config, "submissions_per_day: 1\n").unwrap();
    env.start_with(&["--config", config.to_str().unwrap()]);
    let team02 = add(&env, &["team02", "--gpus", "1"]);

    // Without a token a shared daemon shows nothing but the board.
    assert!(env.fails(&["ps"]).contains("this daemon is shared: present your token"), "{}", env.daemon_log());
    assert_eq!(get(&env, "/api/sessions", None).0, 401);
    assert_eq!(get(&env, "/api/sessions", Some("not-a-token")).0, 401);

    // The organiser pushes the dataset; each team queues a session of its own.
    let src = env.tmp.path().join("src-synth");
    crate::common::synth(&src, 3);
    ok(&env, &org, &["dataset", "push", "synth", src.to_str().unwrap()]);
    let spec = env.tmp.path().join("quick.yaml");
    std::fs::write(&spec, quick_spec("synth", 1, "checkpoints: {keep_best: 1, keep_last: true}\n")).unwrap();
    let run = |token: &str| ok(&env, token, &["run", "-d", "synth", "-e", spec.to_str().unwrap()]).trim().to_string();
    let (s1, s2, s0) = (run(&team01), run(&team02), run(&org));
    assert_eq!((s1.as_str(), s2.as_str(), s0.as_str()), ("team01/synth/1", "team02/synth/1", "org/synth/1"));

    // Isolation: by listing, and by id (404 like a session that does not exist).
    assert_eq!(ids(&env, &team01), std::slice::from_ref(&s1));
    assert_eq!(ids(&env, &team02), std::slice::from_ref(&s2));
    assert_eq!(ids(&env, &org), [s0.clone(), s1.clone(), s2.clone()], "an admin sees everyone's");
    for args in [vec!["stop", s1.as_str()], vec!["logs", s1.as_str()], vec!["model", "ls", s1.as_str()]] {
        let e = fails(&env, &team02, &args);
        assert!(e.contains(&format!("unknown session {s1}")), "rush {}: {e}", args.join(" "));
    }
    for path in [format!("/api/sessions/{s1}"), format!("/sessions/{s1}"), format!("/api/sessions/{s1}/logs")] {
        assert_eq!(get(&env, &path, Some(&team02)).0, 404, "{path}");
        assert_eq!(get(&env, &path, Some(&team01)).0, 200, "{path}");
        assert_eq!(get(&env, &path, Some(&org)).0, 200, "{path}");
    }
    let page = get(&env, "/sessions", Some(&team02)).1;
    assert!(page.contains(&s2) && !page.contains(&s1) && !page.contains(&s0), "the dashboard lists team02's only");
    assert!(page.contains("team02 @") && page.contains("Log out"), "the header names who is logged in");
    let info: serde_json::Value = serde_json::from_str(&get(&env, "/api/info", Some(&team02)).1).unwrap();
    assert_eq!((info["user"].as_str(), info["admin"].as_bool()), (Some("team02"), Some(false)));

    let state = |id: &str| {
        let list: serde_json::Value = serde_json::from_str(&ok(&env, &org, &["ps", "-a", "-j"])).unwrap();
        let s = list.as_array().unwrap().iter().find(|s| s["id"] == id).cloned().unwrap();
        s["state"].as_str().unwrap().to_string()
    };
    for id in [&s1, &s2, &s0] {
        wait_for(TRAIN_TIMEOUT, &format!("{id} to succeed"), || {
            let now = state(id);
            assert!(!["failed", "stopped"].contains(&now.as_str()), "{id} {now}: {}", env.daemon_log());
            (now == "succeeded").then_some(())
        });
    }

    // The daily limit is counted per user: team01's second ranked submission is refused, team02's first is not.
    ok(&env, &team01, &["submit", &s1, "best"]);
    let refused = fails(&env, &team01, &["submit", &s1, "last"]);
    assert!(refused.contains("team01 has made 1 of 1 submissions allowed per day"), "{refused}");
    assert!(fails(&env, &team02, &["submit", &s1, "best"]).contains(&format!("unknown session {s1}")));
    ok(&env, &team02, &["submit", &s2, "best"]);
    let mine: serde_json::Value = serde_json::from_str(&ok(&env, &team02, &["submissions", "-j"])).unwrap();
    let whose: Vec<&str> = mine.as_array().unwrap().iter().map(|s| s["user"].as_str().unwrap()).collect();
    assert_eq!(whose, ["team02"], "a member lists its own submissions");

    // The board is public: anyone reads it, and it names each team.
    let (status, board) = get(&env, "/api/datasets/synth/board", None);
    assert_eq!(status, 200, "{board}");
    assert!(board.contains("\"team01\"") && board.contains("\"team02\""), "{board}");

    // `rush login` checks the token and keeps it: later commands act as that user without RUSH_TOKEN.
    let config_home = env.tmp.path().join("config");
    let login = |args: &[&str]| {
        Command::new(rush_exe())
            .args(args)
            .env("RUSH_HOME", &env.home)
            .env("XDG_CONFIG_HOME", &config_home)
            .env_remove("RUSH_TOKEN")
            .env_remove("RUSH_URL")
            .output()
            .unwrap()
    };
    let bad = login(&["login", "not-a-token"]);
    assert!(!bad.status.success() && !config_home.join("rush/token").exists(), "a refused token is not kept");
    let out = login(&["login", &team02]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("as team02 (member)"), "{out:?}");
    let kept = config_home.join("rush/token");
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&kept).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "only its owner reads the kept token");
    let listed: serde_json::Value = serde_json::from_slice(&login(&["ps", "-a", "-j"]).stdout).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed[0]["id"], s2.as_str());

    // An admin stops another team's session; a member may not.
    let s3 = run(&team01);
    assert!(fails(&env, &team02, &["stop", &s3]).contains("unknown session"));
    ok(&env, &org, &["stop", &s3]);
    assert_eq!(state(&s3), "stopped");
}
