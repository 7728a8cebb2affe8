//! ASHA early stopping for a sweep (issue 18), end to end on the CPU: a 9-trial grid over learning rates, six of them
//! too small to learn anything in an epoch, run by the real daemon with the baseline CNN on tiny synthetic data. Each
//! trial pauses at its rungs (epochs 1 and 3 of 5) and waits without a slot; the hopeless ones are pruned at the first
//! rung, the winner of the second runs to its last epoch, and the epochs spent are counted against the full grid.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::common::{Env, quick_spec, wait_for};

const EPOCHS: u32 = 5;
const SWEEP_TIMEOUT: Duration = Duration::from_secs(900);
/// The learning rates, in the grid's order: good ones among hopeless ones, so that results arrive mixed.
const LRS: [f64; 9] = [0.003, 1e-6, 0.01, 2e-6, 3e-6, 0.001, 4e-6, 5e-6, 6e-6];

fn hopeless(lr: f64) -> bool {
    lr < 1e-5
}

#[test]
fn an_asha_sweep_prunes_the_hopeless_trials_at_the_first_rung_and_trains_the_best_to_the_end() {
    let mut env = Env::new();
    env.start();
    env.push_synth("synth", 7);
    let lrs: Vec<String> = LRS.iter().map(|l| l.to_string()).collect();
    let spec = quick_spec(
        "synth",
        EPOCHS,
        &format!(
            "seed: 3\ncheckpoints: {{keep_best: 1, keep_last: true}}\ngrid: {{optimizer.lr: [{}]}}\n\
             searcher: {{name: asha, metric: val_acc, mode: max, grace_epochs: 1, reduction_factor: 3, \
             max_concurrent: 2}}\n",
            lrs.join(", ")
        ),
    );
    let verdict = env.verdict(&env.drop_spec("asha.yaml", &spec));
    let ids: Vec<String> =
        verdict["sessions"].as_array().expect("sessions").iter().map(|s| s.as_str().unwrap().to_string()).collect();
    assert_eq!(ids.len(), 9, "{verdict}");

    // While it runs: a trial waiting at a rung holds no slot, and `ps` shows the rung.
    let mut saw_waiting = false;
    let ended = wait_for(SWEEP_TIMEOUT, "the sweep to end", || {
        let list = env.json(&["ps", "-a", "-j"]);
        let trials: Vec<serde_json::Value> = list
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| ids.contains(&s["id"].as_str().unwrap().into()))
            .cloned()
            .collect();
        for t in &trials {
            if t["state"] == "waiting" {
                saw_waiting = true;
                assert!(t["slot"].is_null(), "a waiting trial holds no slot: {t}");
            }
        }
        let running = trials.iter().filter(|t| t["state"] == "running").count();
        assert!(running <= 1, "one CPU slot, so at most one trial runs: {running}");
        let done =
            trials.iter().all(|t| ["succeeded", "pruned", "failed", "stopped"].contains(&t["state"].as_str().unwrap()));
        done.then_some(trials)
    });
    assert!(saw_waiting, "no trial was ever seen waiting at a rung");
    let by_id: BTreeMap<&str, &serde_json::Value> = ended.iter().map(|t| (t["id"].as_str().unwrap(), t)).collect();
    let lr_of = |id: &str| by_id[id]["spec"]["optimizer"]["lr"].as_f64().unwrap();
    let state_of = |id: &str| by_id[id]["state"].as_str().unwrap().to_string();
    let log = |id: &str| std::fs::read_to_string(env.session_dir(id).join("train.log")).unwrap_or_default();
    for id in &ids {
        assert_ne!(state_of(id), "failed", "{id} failed: {}\n{}", by_id[id.as_str()]["exit_reason"], log(id));
    }

    // Every hopeless trial was pruned at the first rung, with its rank in the reason.
    for id in ids.iter().filter(|id| hopeless(lr_of(id))) {
        assert_eq!(state_of(id), "pruned", "{id} (lr {})", lr_of(id));
        let reason = by_id[id.as_str()]["exit_reason"].as_str().unwrap();
        assert!(reason.starts_with("pruned at rung 1 (epoch 1): ranked "), "{id}: {reason}");
        assert_eq!(by_id[id.as_str()]["epoch"], 1, "{id} trained past the first rung");
        assert_eq!(by_id[id.as_str()]["rung"], "1/2");
    }
    // The rungs as recorded: the three good trials promoted at the first rung, one of them at the second.
    let rungs: Vec<(String, i64, String)> = env.db("SELECT session, rung, standing FROM rungs ORDER BY rung, t");
    let promoted = |rung: i64| -> Vec<String> {
        rungs.iter().filter(|r| r.1 == rung && r.2 == "promoted").map(|r| r.0.clone()).collect()
    };
    assert_eq!(rungs.iter().filter(|r| r.1 == 0).count(), 9, "every trial reached the first rung: {rungs:?}");
    let mut first: Vec<f64> = promoted(0).iter().map(|id| lr_of(id)).collect();
    first.sort_by(f64::total_cmp);
    assert_eq!(first, vec![0.001, 0.003, 0.01], "promoted at rung 1: {rungs:?}");
    let second = promoted(1);
    assert_eq!(second.len(), 1, "one trial goes on from the second rung: {rungs:?}");

    // The winner ran to its last epoch, resuming from its rung checkpoints, and learned.
    let winner = second[0].as_str();
    assert_eq!(state_of(winner), "succeeded", "{}", log(winner));
    assert_eq!(by_id[winner]["epoch"], EPOCHS);
    assert_eq!(by_id[winner]["rung"], "2/2");
    let epochs: Vec<(i64,)> =
        env.db(&format!("SELECT epoch FROM metrics WHERE session = '{winner}' AND name = 'val_acc' ORDER BY epoch"));
    assert_eq!(epochs.iter().map(|e| e.0).collect::<Vec<_>>(), (1..=EPOCHS as i64).collect::<Vec<_>>());
    let winner_log = log(winner);
    assert!(winner_log.contains("resuming after checkpoint 1") && winner_log.contains("resuming after checkpoint 3"));
    let best = |id: &str| by_id[id]["best_val_acc"].as_f64().unwrap_or(0.0);
    let hopeless_best = ids.iter().filter(|id| hopeless(lr_of(id))).map(|id| best(id)).fold(0.0, f64::max);
    assert!(best(winner) > hopeless_best && best(winner) > 0.3, "{} vs {hopeless_best}", best(winner));

    // Epochs spent, against the same grid without a searcher: 9 x 5.
    let spent: i64 = ids.iter().map(|id| by_id[id.as_str()]["epoch"].as_i64().unwrap()).sum();
    assert_eq!(spent, 9 + 3 * 2 + 2, "9 trials to epoch 1, 3 on to epoch 3, 1 on to epoch 5");
    let full = 9 * i64::from(EPOCHS);
    println!("ASHA: {spent} epochs against {full} for the full grid; best val acc {:.3}", best(winner));

    // A pruned trial keeps its checkpoint, to submit or fork like any other.
    let pruned = ids.iter().find(|id| hopeless(lr_of(id))).unwrap();
    let models = env.json(&["model", "ls", pruned, "-j"]);
    assert_eq!(models.as_array().map(Vec::len), Some(1), "{models}");
    let dry = env.ok(&["submit", "-t", pruned, "1"]);
    assert!(dry.contains("dry run"), "{dry}");
    let out = env.ok(&["fork", pruned, "-c", "1", "-a", "epochs=2 optimizer.lr=0.003", "-m", "from a pruned trial"]);
    let fork = out.split_whitespace().find(|w| w.starts_with("tester/synth/")).expect("the fork's id").to_string();
    let forked = env.wait_state(&fork, "succeeded", Duration::from_secs(300));
    assert_eq!(forked["epoch"], 2, "a fork is a single session: it never pauses at a rung");
    assert!(forked["rung"].is_null() && forked["sweep"].is_null(), "{forked}");

    // `ps -a` and the dashboard show the rungs; the sweep's pruned trials are greyed there.
    let ps = env.ok(&["ps", "-a"]);
    assert!(ps.contains("pruned") && ps.contains("rung 1/2") && ps.contains("rung 2/2"), "{ps}");
    let addr = std::fs::read_to_string(env.home.join("daemon.addr")).unwrap();
    let page = reqwest::blocking::get(format!("http://{}/sessions", addr.trim())).unwrap().text().unwrap();
    assert!(page.contains("class=\"sweep-point pruned\"") && page.contains("rung 2/2"), "{page}");
    let winner_page =
        reqwest::blocking::get(format!("http://{}/sessions/{winner}", addr.trim())).unwrap().text().unwrap();
    assert!(winner_page.contains("rung 2 (epoch 3)") && winner_page.contains("promoted at rung 2"), "{winner_page}");
}
