//! The training child end to end, on the CPU with the real libtorch: `rush train <session dir>` on tiny synthetic
//! datasets made by `rush dataset synth`, and `rush doctor`.
//!
//! Every child runs with one intra-op thread (`OMP_NUM_THREADS=1`): that is what makes resume bitwise reproducible,
//! and it keeps two tests running side by side on a 2-core machine.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use rush::core::event::{Event, EventLine};
use rush::core::spec::{ModelName, ResolvedSpec, Spec};
use rush::data::layout::read_train;
use rush::data::split::split_by_package;
use rush::home::SessionDir;
use rush_trainer::tch;
use rush_trainer::tch::nn::VarStore;
use rush_trainer::tch::{Device, Kind, Tensor};
use rush_trainer::train::{checkpoint, models};

fn rush() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rush"));
    cmd.env("OMP_NUM_THREADS", "1").env("CUDA_VISIBLE_DEVICES", "").env_remove("RUSH_HOME");
    cmd
}

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("train").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A synthetic dataset at 64x64 px (made once per test process and shared).
fn synth(name: &str, train: u64, classes: u32, per_package: u64) -> PathBuf {
    let out = scratch(name);
    let status = rush()
        .args(["dataset", "synth", "--quiet", "--seed", "3", "--test", "8", "--width", "64", "--height", "64"])
        .args(["--train", &train.to_string(), "--classes", &classes.to_string()])
        .args(["--per-package", &per_package.to_string(), "--out"])
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success(), "rush dataset synth failed");
    out
}

/// 480 stickers of 8 classes, 24 per package (20 packages).
fn small_set() -> &'static Path {
    static SET: OnceLock<PathBuf> = OnceLock::new();
    SET.get_or_init(|| synth("small-set", 480, 8, 24))
}

/// 96 stickers for the runs that only check mechanics.
fn tiny_set() -> &'static Path {
    static SET: OnceLock<PathBuf> = OnceLock::new();
    SET.get_or_init(|| synth("tiny-set", 96, 4, 12))
}

/// Writes a session folder whose resolved spec is `yaml` (the user's fields) plus the session id and dataset path.
fn session(name: &str, dataset: &Path, yaml: &str) -> PathBuf {
    let dir = scratch(name);
    let spec = Spec::parse("test.yaml", &format!("dataset: synth\n{yaml}")).unwrap();
    let resolved = ResolvedSpec {
        session: format!("test/synth/{name}"),
        dataset_path: dataset.to_path_buf(),
        init_from: None,
        runtime: None,
        spec,
    };
    std::fs::write(dir.join("spec.yaml"), resolved.to_yaml().unwrap()).unwrap();
    dir
}

fn train(dir: &Path) -> Output {
    rush().arg("train").arg(dir).output().unwrap()
}

fn events(stdout: &[u8]) -> Vec<Event> {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(|l| EventLine::parse(l).unwrap_or_else(|e| panic!("{e}")).event)
        .collect()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

const BASELINE_EPOCHS: u32 = 4;

/// The shared baseline run: the small set, a few epochs of the baseline CNN at 32 px.
struct Run {
    dir: PathBuf,
    spec: Spec,
    out: Output,
    seconds: f64,
}

fn baseline_run() -> &'static Run {
    static RUN: OnceLock<Run> = OnceLock::new();
    RUN.get_or_init(|| {
        let yaml = format!(
            "model: baseline_cnn\nimage_size: 32\nbatch_size: 32\nepochs: {BASELINE_EPOCHS}\nseed: 5\n\
                    optimizer: {{name: sgd, lr: 0.05, momentum: 0.9, nesterov: true, weight_decay: 0.0005}}\n\
                    schedule: {{name: cosine, warmup_epochs: 0.5}}\n\
                    augment: {{random_resized_crop: [0.7, 1.0], hflip: true, color_jitter: 0.1}}\n"
        );
        let dir = session("baseline", small_set(), &yaml);
        let started = std::time::Instant::now();
        let out = train(&dir);
        let seconds = started.elapsed().as_secs_f64();
        assert!(out.status.success(), "rush train failed:\n{}", stderr(&out));
        let spec = ResolvedSpec::from_yaml("spec.yaml", &std::fs::read_to_string(dir.join("spec.yaml")).unwrap())
            .unwrap()
            .spec;
        eprintln!("baseline run: {seconds:.1} s\n{}", stderr(&out));
        Run { dir, spec, out, seconds }
    })
}

#[test]
fn baseline_cnn_learns_well_above_chance() {
    let run = baseline_run();
    // Chance from the data: the validation split the trainer uses (same function, fraction and seed).
    let set = read_train(small_set()).unwrap();
    let split = split_by_package(&set, run.spec.valid_fraction, run.spec.seed);
    let mut counts: BTreeMap<u16, usize> = BTreeMap::new();
    for &i in &split.valid {
        *counts.entry(set.samples[i].label()).or_default() += 1;
    }
    let majority = *counts.values().max().unwrap() as f64 / split.valid.len() as f64;
    let chance = (1.0 / counts.len() as f64).max(majority);
    let best = events(&run.out.stdout)
        .iter()
        .filter_map(|e| match e {
            Event::Epoch { val_acc, .. } => Some(*val_acc),
            _ => None,
        })
        .fold(0.0, f64::max);
    eprintln!(
        "valid {} images, {} classes, chance {chance:.3}, best val_acc {best:.3}",
        split.valid.len(),
        counts.len()
    );
    assert!(best >= 5.0 * chance, "best val_acc {best:.3} < 5 x chance {chance:.3} (run took {:.1} s)", run.seconds);
}

/// Every recipe option at once still learns well above chance: the baseline's spec with `ema:`, both mixes and the
/// per-image options (rotation, grayscale, erasing), validated (and saved) with the average, on the streaming path and
/// on the device-resident one (the CPU's memory, `RUSH_DEVICE_DATA=on`), which draw the same choices. The log says
/// what is on.
#[test]
fn ema_batch_mixing_and_the_per_image_options_learn_well_above_chance() {
    let yaml = format!(
        "model: baseline_cnn\nimage_size: 32\nbatch_size: 32\nepochs: {BASELINE_EPOCHS}\nseed: 5\n\
         optimizer: {{name: sgd, lr: 0.05, momentum: 0.9, nesterov: true, weight_decay: 0.0005}}\n\
         schedule: {{name: cosine, warmup_epochs: 0.5}}\nema: {{decay: 0.99}}\n\
         augment: {{random_resized_crop: [0.7, 1.0], hflip: true, mixup: {{alpha: 0.4, prob: 0.5}}, \
         cutmix: {{alpha: 1.0, prob: 0.5}}, rotate: 15, grayscale: 0.2, random_erasing: 0.25}}\n"
    );
    for resident in ["off", "on"] {
        let started = std::time::Instant::now();
        let env = [("RUSH_DEVICE_DATA", resident)];
        let (last, log) = final_val_acc_with(&format!("ema-mix-resident-{resident}"), &yaml, &env);
        eprintln!(
            "ema + mixup/cutmix, resident {resident}: final val_acc {last:.3} in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        assert!(log.contains("EMA of the weights on, decay 0.99"), "{log}");
        let mixing = "batch mixing: cutmix (alpha 1, 50% of batches), else mixup (alpha 0.4, 50% of batches)";
        assert!(log.contains(mixing), "{log}");
        assert_eq!(log.contains("augmented there"), resident == "on", "{log}");
        assert!(log.contains("inputs normalised by mean") && log.contains("the training split's"), "{log}");
        // 8 classes: chance is 0.125 (the plain baseline reaches 5 x chance).
        assert!(last >= 0.5, "resident {resident}: final val_acc {last:.3}");
    }
}

/// The final validation accuracy of a run of `yaml` on the small set with `RUSH_CPU_BF16` set to `cpu_bf16`, and the
/// child's stderr.
fn final_val_acc(name: &str, yaml: &str, cpu_bf16: &str) -> (f64, String) {
    final_val_acc_with(name, yaml, &[("RUSH_CPU_BF16", cpu_bf16)])
}

/// [`final_val_acc`] with these environment variables set for the child.
fn final_val_acc_with(name: &str, yaml: &str, env: &[(&str, &str)]) -> (f64, String) {
    let dir = session(name, small_set(), yaml);
    let out = rush().arg("train").arg(&dir).envs(env.iter().copied()).output().unwrap();
    assert!(out.status.success(), "rush train failed:\n{}", stderr(&out));
    let last = events(&out.stdout)
        .iter()
        .rev()
        .find_map(|e| match e {
            Event::Epoch { val_acc, .. } => Some(*val_acc),
            _ => None,
        })
        .expect("an epoch");
    (last, stderr(&out))
}

/// bf16 on the CPU (CPU autocast, forced with `RUSH_CPU_BF16=on` so the test means the same on a CPU without native
/// bf16, where it is emulated) learns as fp32 does: the same spec and seed end within a tolerance of each other.
#[test]
fn cpu_bf16_autocast_learns_as_fp32_does() {
    let yaml = |precision: &str| {
        format!(
            "model: baseline_cnn\nimage_size: 32\nbatch_size: 32\nepochs: 3\nseed: 9\nprecision: {precision}\n\
             optimizer: {{name: sgd, lr: 0.05, momentum: 0.9, nesterov: true, weight_decay: 0.0005}}\n\
             schedule: {{name: cosine, warmup_epochs: 0.5}}\naugment: {{random_resized_crop: null, hflip: false}}\n"
        )
    };
    let (fp32, fp32_log) = final_val_acc("precision-fp32", &yaml("fp32"), "on");
    let (bf16, bf16_log) = final_val_acc("precision-bf16", &yaml("bf16"), "on");
    assert!(bf16_log.contains("bf16 autocast on the CPU"), "{bf16_log}");
    assert!(!fp32_log.contains("bf16 autocast"), "fp32 asked, fp32 run: {fp32_log}");
    eprintln!("final val_acc: fp32 {fp32:.3}, bf16 {bf16:.3}");
    // 8 classes: chance is 0.125. Both learn, and bf16 ends near fp32 (48 validation stickers: 2 points each).
    assert!(fp32 > 0.4 && bf16 > 0.4, "fp32 {fp32:.3}, bf16 {bf16:.3}");
    assert!((fp32 - bf16).abs() <= 0.15, "fp32 {fp32:.3} vs bf16 {bf16:.3}");
    // And `off` keeps a bf16 spec in fp32, saying why.
    let dir =
        session("precision-off", tiny_set(), &format!("{}\nepochs: 1\n", yaml("bf16").replace("epochs: 3\n", "")));
    let out = rush().arg("train").arg(&dir).env("RUSH_CPU_BF16", "off").output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("the CPU runs fp32, not the spec's bf16: RUSH_CPU_BF16=off"), "{}", stderr(&out));
}

#[test]
fn event_stream_parses_and_follows_the_schema() {
    let run = baseline_run();
    let stdout = String::from_utf8(run.out.stdout.clone()).unwrap();
    let file = std::fs::read_to_string(run.dir.join("events.jsonl")).unwrap();
    assert_eq!(stdout, file, "events.jsonl holds exactly the stdout lines");
    let events = events(&run.out.stdout);
    let Event::Started { epochs, steps_per_epoch, start_epoch, train_size, valid_size, params, .. } = &events[0] else {
        panic!("first event is {:?}", events[0]);
    };
    assert_eq!((*epochs, *start_epoch), (BASELINE_EPOCHS, 1));
    assert!(*train_size + *valid_size <= 480 && *valid_size > 0 && *params > 1_000_000);
    let mut epoch = 0;
    let mut last_step = 0;
    let mut steps_this_epoch = 0;
    let mut expect_checkpoint = false;
    for e in &events[1..events.len() - 1] {
        match e {
            Event::Step { step, epoch: ep, loss, lr, img_per_s, data_wait } => {
                assert!(!expect_checkpoint, "a step between epoch and checkpoint");
                assert_eq!(*ep, epoch + 1);
                assert!(*step > last_step && *step <= u64::from(*ep) * steps_per_epoch, "step {step}");
                assert!(loss.is_finite() && *lr > 0.0 && *img_per_s > 0.0 && (0.0..=1.0).contains(data_wait));
                last_step = *step;
                steps_this_epoch += 1;
            }
            Event::Epoch { epoch: ep, train_loss, train_acc, val_loss, val_acc, seconds, data_wait, data_wait_s } => {
                assert_eq!(*ep, epoch + 1);
                assert!(steps_this_epoch > 0, "epoch {ep} without steps");
                assert!(train_loss.is_finite() && val_loss.is_finite() && *seconds > 0.0);
                assert!((0.0..=1.0).contains(train_acc) && (0.0..=1.0).contains(val_acc));
                assert!((0.0..=1.0).contains(data_wait));
                assert!(data_wait_s.is_some_and(|w| (0.0..=*seconds).contains(&w)), "{data_wait_s:?}");
                assert_eq!(last_step, u64::from(*ep) * steps_per_epoch);
                epoch = *ep;
                steps_this_epoch = 0;
                expect_checkpoint = true;
            }
            Event::Checkpoint { name, path, epoch: ep, bytes, .. } => {
                assert!(expect_checkpoint && *ep == epoch && *name == ep.to_string());
                assert_eq!(std::fs::metadata(run.dir.join(path)).unwrap().len(), *bytes);
                expect_checkpoint = false;
            }
            other => panic!("unexpected event {other:?}"),
        }
    }
    assert_eq!(epoch, BASELINE_EPOCHS);
    assert!(matches!(events.last(), Some(Event::Finished { epochs: BASELINE_EPOCHS, .. })));
    // The checkpoint JSON carries the metrics and the spec hash.
    let meta = checkpoint::load_meta(&SessionDir::new(&run.dir).checkpoint_meta(BASELINE_EPOCHS)).unwrap();
    assert_eq!((meta.epoch, meta.step), (BASELINE_EPOCHS, u64::from(BASELINE_EPOCHS) * steps_per_epoch));
    assert_eq!(meta.spec_hash, run.spec.hash());
}

#[test]
fn python_reads_a_checkpoint_and_gets_the_same_logits() {
    let python = std::env::var("RUSH_PYTHON").expect("RUSH_PYTHON must name a python with torch and safetensors");
    let run = baseline_run();
    let weights = SessionDir::new(&run.dir).checkpoint_weights(BASELINE_EPOCHS);
    // rush's own logits for a fixed input, from the checkpoint.
    let vs = VarStore::new(Device::Cpu);
    let net = models::build(ModelName::BaselineCnn, &vs);
    checkpoint::load_weights(&vs, &weights).unwrap();
    tch::manual_seed(0);
    let input = Tensor::randn([4, 3, 32, 32], (Kind::Float, Device::Cpu));
    let logits = tch::no_grad(|| net.forward_t(&input, false));
    let reference = run.dir.join("logits.safetensors");
    Tensor::write_safetensors(&[("input", &input), ("logits", &logits)], &reference).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/read_checkpoint.py");
    let out = Command::new(&python)
        .arg(&script)
        .arg(&weights)
        .args(["--model", "baseline_cnn", "--logits"])
        .arg(&reference)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
    assert_eq!(report["tensors"], 32);
    assert_eq!(report["params"], models::parameter_count(&vs));
    // The same script rejects a checkpoint of another architecture.
    let out = Command::new(&python).arg(&script).arg(&weights).args(["--model", "resnet18"]).output().unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("missing ['bn1.bias'"));
}

const MECHANICS: &str = "model: baseline_cnn\nimage_size: 24\nbatch_size: 16\nepochs: 3\nseed: 11\n\
                         optimizer: {name: adamw, lr: 0.003, weight_decay: 0.05}\n\
                         augment: {random_resized_crop: [0.5, 1.0], hflip: true, color_jitter: 0.2}\n";

#[test]
fn a_run_killed_after_epoch_one_resumes_to_bitwise_identical_weights() {
    resumes_to_bitwise_identical_weights("resume", MECHANICS);
}

/// The same with the moving average of the weights and batch mixing on: the state file carries the raw weights and
/// the average's count (the weights file is the average), and the mix draws are seeded per batch.
#[test]
fn a_run_with_ema_and_batch_mixing_killed_after_epoch_one_resumes_to_bitwise_identical_weights() {
    let yaml = MECHANICS.replace(
        "color_jitter: 0.2}",
        "color_jitter: 0.2, mixup: {alpha: 0.4, prob: 0.5}, cutmix: {alpha: 1.0, prob: 0.5}}\nema: {decay: 0.9}",
    );
    assert!(yaml.contains("ema:") && yaml.contains("cutmix"), "{yaml}");
    let (whole, _) = resumes_to_bitwise_identical_weights("resume-ema", &yaml);
    // The average was saved: the weights file is not the raw weights the state file keeps.
    let weights: BTreeMap<String, Tensor> =
        Tensor::read_safetensors(whole.checkpoint_weights(3)).unwrap().into_iter().collect();
    let state: BTreeMap<String, Tensor> =
        Tensor::read_safetensors(whole.checkpoint_state(3)).unwrap().into_iter().collect();
    assert!(state["ema.updates"].int64_value(&[0]) > 0);
    let differing = weights.iter().filter(|(name, t)| !t.equal(&state[&format!("raw.{name}")])).count();
    assert!(differing * 2 > weights.len(), "only {differing} of {} tensors differ from the raw weights", weights.len());
}

/// Trains `yaml` on the tiny set twice, once whole and once killed after epoch 1 and resumed; asserts the last
/// checkpoint's weights and state files are identical byte for byte. Returns both session folders.
fn resumes_to_bitwise_identical_weights(name: &str, yaml: &str) -> (SessionDir, SessionDir) {
    let whole = session(&format!("{name}-whole"), tiny_set(), yaml);
    let out = train(&whole);
    assert!(out.status.success(), "{}", stderr(&out));

    let broken = session(&format!("{name}-broken"), tiny_set(), yaml);
    let mut child = rush().arg("train").arg(&broken).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    for line in BufReader::new(stdout).lines() {
        if let Event::Checkpoint { epoch: 1, .. } = EventLine::parse(&line.unwrap()).unwrap().event {
            break;
        }
    }
    child.kill().unwrap();
    assert!(!child.wait().unwrap().success());
    // "Stopped after epoch 1": whatever came later is gone.
    let dir = SessionDir::new(&broken);
    for epoch in 2..=3 {
        for path in [dir.checkpoint_weights(epoch), dir.checkpoint_state(epoch), dir.checkpoint_meta(epoch)] {
            let _ = std::fs::remove_file(path);
        }
    }
    let out = train(&broken);
    assert!(out.status.success(), "{}", stderr(&out));
    let resumed = events(&out.stdout);
    assert!(matches!(resumed[0], Event::Started { start_epoch: 2, .. }), "{:?}", resumed[0]);

    let a = Tensor::read_safetensors(SessionDir::new(&whole).checkpoint_weights(3)).unwrap();
    let b: BTreeMap<String, Tensor> =
        Tensor::read_safetensors(dir.checkpoint_weights(3)).unwrap().into_iter().collect();
    assert_eq!(a.len(), b.len());
    let differing: Vec<&String> = a.iter().filter(|(name, t)| !t.equal(&b[name])).map(|(name, _)| name).collect();
    assert!(differing.is_empty(), "tensors differ after resume: {differing:?}");
    // Optimizer state too, and the files byte for byte.
    for (x, y) in [
        (SessionDir::new(&whole).checkpoint_weights(3), dir.checkpoint_weights(3)),
        (SessionDir::new(&whole).checkpoint_state(3), dir.checkpoint_state(3)),
    ] {
        assert!(std::fs::read(&x).unwrap() == std::fs::read(&y).unwrap(), "{} != {}", x.display(), y.display());
    }
    (SessionDir::new(&whole), dir)
}

#[test]
fn a_diverging_run_fails_naming_nan() {
    // A real cause: plain SGD at lr 10 with no warm-up blows the weights up within a few epochs (about 15 steps);
    // the run stops there, long before its 30 epochs.
    let yaml = "model: baseline_cnn\nimage_size: 24\nbatch_size: 16\nepochs: 30\nseed: 1\n\
                optimizer: {name: sgd, lr: 10, momentum: 0.9, weight_decay: 0}\n\
                schedule: {name: constant, warmup_epochs: 0}\nloss: {name: cross_entropy, label_smoothing: 0}\n";
    let dir = session("diverge", tiny_set(), yaml);
    let out = train(&dir);
    assert!(!out.status.success());
    let events = events(&out.stdout);
    let Some(Event::Failed { reason }) = events.last() else { panic!("last event {:?}", events.last()) };
    assert!(reason.contains("NaN") && reason.contains("optimizer.lr"), "{reason}");
    assert!(!events.iter().any(|e| matches!(e, Event::Finished { .. })));
    assert!(stderr(&out).contains(reason.as_str()));
}

#[test]
fn an_unreadable_dataset_fails_with_its_path() {
    let missing = scratch("no-dataset").join("nowhere");
    let dir = session("no-dataset-session", &missing, "epochs: 1\n");
    let out = train(&dir);
    assert!(!out.status.success());
    let events = events(&out.stdout);
    let [Event::Failed { reason }] = events.as_slice() else { panic!("{events:?}") };
    assert!(reason.contains("dataset unreadable") && reason.contains("nowhere"), "{reason}");
}

#[test]
fn a_corrupt_image_is_skipped_and_reported_and_bce_trains() {
    // A private copy of the tiny set's layout with one PNG truncated.
    let data = scratch("corrupt-set");
    copy_dir(tiny_set(), &data);
    let images = data.join("train/train_data/images");
    let victim = std::fs::read_dir(&images).unwrap().next().unwrap().unwrap().path();
    let png = std::fs::read_dir(&victim).unwrap().next().unwrap().unwrap().path();
    let bytes = std::fs::read(&png).unwrap();
    std::fs::write(&png, &bytes[..bytes.len() / 3]).unwrap();
    let yaml =
        "model: baseline_cnn\nimage_size: 16\nbatch_size: 16\nepochs: 1\nloss: {name: bce, label_smoothing: 0.1}\n";
    let dir = session("corrupt", &data, yaml);
    let out = train(&dir);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("skipping") && err.contains(&*png.to_string_lossy()), "{err}");
    assert!(err.contains("1 image(s) could not be decoded"), "{err}");
    assert!(matches!(events(&out.stdout).last(), Some(Event::Finished { epochs: 1, .. })));
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn a_fork_starts_from_the_given_weights() {
    let run = baseline_run();
    let source = SessionDir::new(&run.dir);
    let best = checkpoint::load_meta(&source.checkpoint_meta(BASELINE_EPOCHS)).unwrap().val_acc;
    // One epoch at a tiny learning rate: validation accuracy stays where the source left it, far above a fresh start.
    let yaml = "model: baseline_cnn\nimage_size: 32\nbatch_size: 32\nepochs: 1\nseed: 5\n\
                optimizer: {name: sgd, lr: 0.000001, momentum: 0.0, weight_decay: 0}\n\
                schedule: {name: constant, warmup_epochs: 0}\n";
    let dir = session("fork", small_set(), yaml);
    let path = dir.join("spec.yaml");
    let mut resolved = ResolvedSpec::from_yaml("spec.yaml", &std::fs::read_to_string(&path).unwrap()).unwrap();
    resolved.init_from = Some(source.checkpoint_weights(BASELINE_EPOCHS));
    std::fs::write(&path, resolved.to_yaml().unwrap()).unwrap();
    let out = train(&dir);
    assert!(out.status.success(), "{}", stderr(&out));
    let val = events(&out.stdout)
        .iter()
        .find_map(|e| match e {
            Event::Epoch { val_acc, .. } => Some(*val_acc),
            _ => None,
        })
        .unwrap();
    assert!((val - best).abs() <= 0.05, "fork val_acc {val} vs source {best}");
    // A fork from another architecture's weights is refused, naming a tensor.
    resolved.spec.model = ModelName::Resnet18;
    std::fs::write(&path, resolved.to_yaml().unwrap()).unwrap();
    let out = train(&dir);
    assert!(!out.status.success());
    let reason = match events(&out.stdout).last() {
        Some(Event::Failed { reason }) => reason.clone(),
        other => panic!("{other:?}"),
    };
    assert!(reason.contains(&format!("{BASELINE_EPOCHS}.safetensors")) && reason.contains("has no tensor"), "{reason}");
}

#[test]
fn doctor_reports_libtorch_and_cuda() {
    let out = rush().args(["doctor", "-j"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["libtorch_version"].as_str().unwrap().starts_with("2.11.0"), "{report}");
    assert!(report["libtorch_path"].as_str().unwrap().ends_with("libtorch_cpu.so"), "{report}");
    let available = report["cuda_available"].as_bool().unwrap();
    assert_eq!(report["devices"].as_array().unwrap().is_empty(), !available);
    let text = rush().arg("doctor").output().unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("libtorch        2.11.0") && text.contains("cuda available"), "{text}");
}
