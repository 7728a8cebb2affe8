//! The speed work's correctness: the decoded-image cache through `rush train` (built once, reused, rebuilt when the
//! dataset changes or the file is damaged), the device-resident data path against the streaming one (same batches up
//! to rounding, same accuracy on a fixed seed), and the new `rush bench` commands end to end at toy sizes, including
//! `bench/gpu.sh` itself run on the CPU (`DEVICE=cpu`), so the GPU machine's one script is known to work before it runs.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::rc::Rc;
use std::sync::{Arc, OnceLock};

use rush::core::event::{Event, EventLine};
use rush::core::spec::{Augment, ResolvedSpec, Spec};
use rush::data::cache::ImageCache;
use rush::data::layout::{Sample, read_train};
use rush_trainer::tch::{Device, Kind};
use rush_trainer::train::augment::Plan;
use rush_trainer::train::loader::{self, BadImages, BatchSource, Loader, LoaderSpec};
use rush_trainer::train::resident::{ResidentEpoch, ResidentImages};

fn rush() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rush"));
    cmd.env("OMP_NUM_THREADS", "1").env("CUDA_VISIBLE_DEVICES", "").env_remove("RUSH_HOME");
    cmd.env_remove("RUSH_DEVICE_DATA").env_remove("RUSH_IMAGE_CACHE");
    cmd
}

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("speed").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn synth(out: &Path, train: u64, classes: u32, per_package: u64, side: u32) {
    let status = rush()
        .args(["dataset", "synth", "--quiet", "--seed", "11", "--test", "0"])
        .args(["--width", &side.to_string(), "--height", &side.to_string()])
        .args(["--train", &train.to_string(), "--classes", &classes.to_string()])
        .args(["--per-package", &per_package.to_string(), "--out"])
        .arg(out)
        .status()
        .unwrap();
    assert!(status.success(), "rush dataset synth failed");
}

/// 320 stickers of 6 classes at 48 px, shared by the tests that only read it.
fn shared_set() -> &'static Path {
    static SET: OnceLock<PathBuf> = OnceLock::new();
    SET.get_or_init(|| {
        let dir = scratch("shared-set");
        synth(&dir, 320, 6, 20, 48);
        dir
    })
}

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

fn train(dir: &Path, cache: &Path, resident: &str) -> Output {
    rush().arg("train").arg(dir).env("RUSH_IMAGE_CACHE", cache).env("RUSH_DEVICE_DATA", resident).output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn events(out: &Output) -> Vec<Event> {
    String::from_utf8_lossy(&out.stdout).lines().map(|l| EventLine::parse(l).unwrap().event).collect()
}

const QUICK: &str = "model: baseline_cnn\nimage_size: 16\nbatch_size: 32\nepochs: 1\nseed: 2\n";

#[test]
fn the_image_cache_is_built_once_reused_and_rebuilt_when_the_dataset_or_file_changes() {
    let data = scratch("cache-set");
    synth(&data, 96, 4, 12, 40);
    let cache = scratch("cache-dir");
    let file = cache.join("train-16.rgb");

    let first = train(&session("cache-1", &data, QUICK), &cache, "off");
    let err = stderr(&first);
    assert!(first.status.success(), "{err}");
    assert!(err.contains("decoded 96 images at 16 px"), "{err}");
    assert!(file.is_file());
    let built = std::fs::metadata(&file).unwrap().modified().unwrap();

    // Another session on the same dataset and size reuses it: nothing is decoded, the file is untouched.
    let second = train(&session("cache-2", &data, QUICK), &cache, "off");
    let err = stderr(&second);
    assert!(second.status.success(), "{err}");
    assert!(err.contains("reused (96 images)") && !err.contains("decoded"), "{err}");
    assert_eq!(std::fs::metadata(&file).unwrap().modified().unwrap(), built);

    // A damaged file is rebuilt, saying why.
    let len = std::fs::metadata(&file).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&file).unwrap().set_len(len / 2).unwrap();
    let third = train(&session("cache-3", &data, QUICK), &cache, "off");
    let err = stderr(&third);
    assert!(third.status.success(), "{err}");
    assert!(err.contains("was rebuilt") && err.contains("truncated") && err.contains("decoded 96 images"), "{err}");
    assert_eq!(std::fs::metadata(&file).unwrap().len(), len);

    // A changed dataset (one sticker redrawn) invalidates it.
    let set = read_train(&data).unwrap();
    let victim = &set.samples[5].path;
    let other = &set.samples[50].path;
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::copy(other, victim).unwrap();
    let fourth = train(&session("cache-4", &data, QUICK), &cache, "off");
    let err = stderr(&fourth);
    assert!(fourth.status.success(), "{err}");
    assert!(err.contains("the dataset changed") && err.contains("decoded 96 images"), "{err}");
    let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    let paths: Vec<PathBuf> = set.samples.iter().map(|s| s.path.clone()).collect();
    let (cache, report) = ImageCache::open_or_build(&file, &paths, 16, &pool).unwrap();
    assert!(!report.built, "the child left a cache this process accepts");
    assert_eq!(cache.image(5).unwrap(), rush::data::image::load_rgb(other, 16).unwrap().as_slice());
}

fn samples_and_cache(side: u32) -> (Arc<[Sample]>, Arc<ImageCache>) {
    let set = read_train(shared_set()).unwrap();
    let paths: Vec<PathBuf> = set.samples.iter().map(|s| s.path.clone()).collect();
    let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
    let dir = scratch(&format!("lib-cache-{side}"));
    let (cache, _) = ImageCache::open_or_build(&dir.join("train.rgb"), &paths, side, &pool).unwrap();
    (set.samples.into(), Arc::new(cache))
}

#[test]
fn resident_batches_equal_streamed_batches() {
    let side = 32u32;
    let (samples, cache) = samples_and_cache(side);
    let train: Vec<usize> = (0..samples.len()).collect();
    let batches = loader::epoch_batches(&train, 40, 9, 2);
    // Every per-image option on, so each one's draws and application are compared between the two paths.
    let augment = Plan::floats(Augment {
        random_resized_crop: Some([0.5, 1.0]),
        hflip: true,
        color_jitter: 0.2,
        rotate: 15.0,
        grayscale: 0.3,
        random_erasing: 0.5,
        ..Augment::default()
    });
    let seed = loader::augment_seed(9, 2);
    let pool = Arc::new(rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap());
    let mut streamed = Loader::spawn(
        samples.clone(),
        batches.clone(),
        LoaderSpec {
            image_size: side,
            augment: Some(augment.clone()),
            multi_hot: true,
            pin_for: None,
            prefetch: 2,
            seed,
            cache: Some(cache.clone()),
        },
        pool,
        Arc::new(BadImages::default()),
    );
    let resident = Rc::new(ResidentImages::upload(&cache, &samples, Device::Cpu).unwrap());
    let mut on_device =
        ResidentEpoch::new(resident.clone(), samples.clone(), batches.clone(), Some(augment), seed, true, false);
    let mut count = 0;
    while let Some(a) = streamed.next_batch() {
        let b = on_device.next_batch().expect("as many batches");
        count += 1;
        assert_eq!(b.images.size(), vec![40, 32, 32, 3]);
        assert_eq!(b.images.kind(), Kind::Float);
        assert!(a.labels.equal(&b.labels));
        assert!(a.targets.as_ref().unwrap().equal(b.targets.as_ref().unwrap()));
        assert_eq!(a.images.kind(), Kind::Float, "augmented host batches are floats");
        let diff = (&a.images - &b.images).abs();
        let worst = diff.max().double_value(&[]);
        assert!(worst <= 0.05, "batch {count}: the paths differ by up to {worst}");
    }
    assert!(on_device.next_batch().is_none());
    assert_eq!(count, batches.len());
    // Validation batches (no augmentation) are the cached bytes themselves.
    let valid = resident.batch(&samples, &[3, 1, 4], None, 0, false, false).unwrap();
    assert_eq!(valid.images.kind(), Kind::Uint8);
    assert_eq!(Vec::<u8>::try_from(valid.images.get(1).flatten(0, -1)).unwrap(), cache.image(1).unwrap());
    // Deterministic from the seed.
    let plan = || Some(Plan::floats(aug()));
    let mut a = ResidentEpoch::new(resident.clone(), samples.clone(), batches.clone(), plan(), seed, false, false);
    let mut b = ResidentEpoch::new(resident.clone(), samples.clone(), batches.clone(), plan(), seed, false, false);
    let mut c = ResidentEpoch::new(resident, samples, batches, plan(), seed + 1, false, false);
    let (a, b, c) = (a.next_batch().unwrap(), b.next_batch().unwrap(), c.next_batch().unwrap());
    assert!(a.images.equal(&b.images));
    assert!(!a.images.equal(&c.images));
}

fn aug() -> Augment {
    Augment { random_resized_crop: Some([0.6, 1.0]), hflip: true, color_jitter: 0.1, ..Augment::default() }
}

fn final_val_acc(out: &Output) -> f64 {
    events(out)
        .iter()
        .rev()
        .find_map(|e| match e {
            Event::Epoch { val_acc, .. } => Some(*val_acc),
            _ => None,
        })
        .expect("an epoch event")
}

#[test]
fn a_fixed_seed_run_reaches_the_same_accuracy_on_the_device_resident_path() {
    let yaml = "model: baseline_cnn\nimage_size: 24\nbatch_size: 32\nepochs: 4\nseed: 4\nvalid_fraction: 0.25\n\
                optimizer: {name: sgd, lr: 0.05, momentum: 0.9, weight_decay: 0.0005}\n\
                schedule: {name: cosine, warmup_epochs: 0.5}\n\
                augment: {random_resized_crop: [0.7, 1.0], hflip: true, color_jitter: 0.1}\n";
    let cache = scratch("resident-cache");
    let streamed = train(&session("resident-off", shared_set(), yaml), &cache, "off");
    assert!(streamed.status.success(), "{}", stderr(&streamed));
    assert!(stderr(&streamed).contains("streaming from the image cache"), "{}", stderr(&streamed));
    let resident = train(&session("resident-on", shared_set(), yaml), &cache, "on");
    let err = stderr(&resident);
    assert!(resident.status.success(), "{err}");
    assert!(err.contains("images on cpu") && err.contains("augmented there"), "{err}");
    let (a, b) = (final_val_acc(&streamed), final_val_acc(&resident));
    eprintln!("val_acc streamed {a:.4}, resident {b:.4}");
    let classes = 6.0;
    assert!(a > 1.5 / classes && b > 1.5 / classes, "both learn: {a} {b}");
    assert!((a - b).abs() <= 0.08, "streamed {a} vs resident {b}");
    // Data wait is reported for each epoch.
    for e in events(&resident) {
        if let Event::Epoch { data_wait_s, seconds, .. } = e {
            assert!(data_wait_s.is_some_and(|w| w >= 0.0 && w <= seconds), "{data_wait_s:?}");
        }
    }
}

fn table_rows(stdout: &str) -> Vec<Vec<String>> {
    stdout
        .lines()
        .filter(|l| l.starts_with('|'))
        .skip(2)
        .map(|l| l.trim_matches('|').split('|').map(|c| c.trim().to_string()).collect())
        .collect()
}

fn ratio(cell: &str) -> f64 {
    cell.strip_suffix('x').and_then(|r| r.parse().ok()).unwrap_or_else(|| panic!("ratio {cell:?}"))
}

#[test]
fn bench_epoch_ingest_and_dashboard_print_their_rows() {
    let data = scratch("bench-set");
    synth(&data, 160, 4, 16, 64);
    let out = rush()
        .args(["bench", "epoch", "--device", "cpu", "--size", "32", "--batch", "32", "--workers", "1", "--dataset"])
        .arg(&data)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "bench epoch: {}{stdout}", stderr(&out));
    let rows = table_rows(&stdout);
    assert_eq!(rows.len(), 2, "{stdout}");
    assert!(rows[0][0].starts_with("epoch 1") && rows[1][0].starts_with("epochs 2..2"), "{stdout}");
    for row in &rows {
        assert!(row[1].contains("img/s, data wait") && row[2].contains("DataLoader"), "{stdout}");
        assert!(ratio(&row[3]) > 0.0, "{stdout}");
    }

    let out = rush().args(["bench", "ingest", "--points", "20000", "--repeats", "2"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "bench ingest: {}{stdout}", stderr(&out));
    let rows = table_rows(&stdout);
    assert_eq!(rows.len(), 2, "{stdout}");
    assert!(rows[0][1].ends_with("points/s") && rows[1][1].ends_with(" ms"), "{stdout}");
    assert!(ratio(&rows[0][3]) > 0.0 && ratio(&rows[1][3]) > 0.0, "{stdout}");

    let out = rush()
        .args(["bench", "dashboard", "--sessions", "300", "--sse-clients", "10", "--requests", "20"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "bench dashboard: {}{stdout}", stderr(&out));
    let rows = table_rows(&stdout);
    assert_eq!(rows.len(), 1, "{stdout}");
    assert!(rows[0][0].contains("300 sessions") && rows[0][1].starts_with("p99 "), "{stdout}");
    assert!(ratio(&rows[0][3]) > 0.0, "{stdout}");
}

#[test]
fn the_gpu_script_runs_on_the_cpu_at_toy_sizes_and_prints_every_row() {
    let python = std::env::var("RUSH_PYTHON")
        .expect("RUSH_PYTHON must name a Python with torch and pillow (scripts/setup.sh --env sets it)");
    let dir = scratch("gpu-script");
    let log = dir.join("runs.log");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/gpu.sh");
    let started = std::time::Instant::now();
    let out = Command::new("bash")
        .arg(&script)
        .arg(env!("CARGO_BIN_EXE_rush"))
        .env("RUSH_PYTHON", &python)
        .env("LOG", &log)
        .env("TMPDIR", &dir)
        .env("OMP_NUM_THREADS", "1")
        .env("CUDA_VISIBLE_DEVICES", "")
        .envs([("DEVICE", "cpu"), ("COMPILE", "0"), ("MODELS", "baseline_cnn resnet18"), ("PRECISIONS", "fp32 bf16")])
        .envs([("SIZE", "32"), ("BATCH", "16"), ("STEPS", "2"), ("WARMUP", "1")])
        .envs([("IMAGES", "200"), ("REF_IMAGES", "100")])
        // limits for 2 shared cores (the defaults are sized for an H200)
        .envs([("PER_RUN", "60"), ("EPOCH_RUN", "240"), ("SCORE_RUN", "300")])
        .envs([("SCORE_MODEL", "baseline_cnn"), ("SCORE_SIZE", "32"), ("SCORE_TEST", "200"), ("SCORE_MEMBERS", "3")])
        .env_remove("DATA")
        .env_remove("RUSH_BENCH_CPU")
        .env_remove("RUSH_HOME")
        .env_remove("RUSH_URL")
        .env_remove("RUSH_IMAGE_CACHE")
        .env_remove("RUSH_DEVICE_DATA")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let runs = std::fs::read_to_string(&log).unwrap_or_default();
    eprintln!("bench/gpu.sh on the CPU took {:.0} s", started.elapsed().as_secs_f64());
    assert!(out.status.success(), "bench/gpu.sh: {}{stdout}\n--- runs ---\n{runs}", stderr(&out));
    let lines: Vec<&str> = stdout.lines().filter(|l| l.starts_with('|')).collect();
    assert!(lines.first().is_some_and(|h| h.contains("benchmark") && h.contains("met")), "{stdout}");
    for line in &lines {
        assert!(!line.contains("failed") && !line.contains("timed out"), "{line}\n--- runs ---\n{runs}");
    }
    let rows = table_rows(&stdout);
    // 2 models x 2 precisions of steps (bf16 runs as fp32 on a CPU without native bf16), 2 models x 2 trainer changes
    // (channels-last is CUDA only; the ablation runs bf16), 2 models x (first, later) epochs, 1 score
    let b = match rush_trainer::train::device::CpuBf16::here() {
        rush_trainer::train::device::CpuBf16::Autocast(_) => "bf16",
        rush_trainer::train::device::CpuBf16::Fp32(_) => "fp32",
    };
    let expected: Vec<(String, String)> = [
        ("train step baseline_cnn 32px batch 16 fp32 on cpu".to_string(), String::new()),
        (format!("train step baseline_cnn 32px batch 16 {b} on cpu"), String::new()),
        ("train step resnet18 32px batch 16 fp32 on cpu".to_string(), String::new()),
        (format!("train step resnet18 32px batch 16 {b} on cpu"), String::new()),
        ("trainer change: flat-buffer update".to_string(), format!("baseline_cnn 32px batch 16 {b} on cpu")),
        ("trainer change: loss read once per window".to_string(), format!("baseline_cnn 32px batch 16 {b} on cpu")),
        ("trainer change: flat-buffer update".to_string(), format!("resnet18 32px batch 16 {b} on cpu")),
        ("trainer change: loss read once per window".to_string(), format!("resnet18 32px batch 16 {b} on cpu")),
        ("epoch 1 incl. cache build".to_string(), "resnet18 32px".to_string()),
        ("epochs 2..2, resnet18 32px".to_string(), String::new()),
        ("epoch 1 incl. cache build".to_string(), "baseline_cnn 32px".to_string()),
        ("epochs 2..2, baseline_cnn 32px".to_string(), String::new()),
        (
            "score 200 synth test stickers (370x320), 3-model baseline_cnn ensemble at 32px on cpu".to_string(),
            String::new(),
        ),
    ]
    .into();
    assert_eq!(rows.len(), expected.len(), "{stdout}");
    for (row, (start, also)) in rows.iter().zip(expected) {
        assert!(row[0].starts_with(start.as_str()) && row[0].contains(also.as_str()), "expected {start:?}: {row:?}");
        let figure: f64 = row[1].split_whitespace().next().and_then(|f| f.parse().ok()).unwrap_or(-1.0);
        assert!(figure > 0.0 && figure.is_finite(), "no figure in {row:?}");
    }
    for row in &rows[..12] {
        assert!(row[1].contains("img/s") && ratio(&row[3]) > 0.0, "{row:?}");
    }
    for row in &rows[4..8] {
        assert!(row[1].ends_with("img/s without it") && row[2].ends_with("img/s with every change"), "{row:?}");
    }
    let score = &rows[12];
    assert!(score[1].contains(" s per 1,000 images; inference ") && score[1].contains("mix + score"), "{score:?}");
    assert!(score[2].contains("informative only") && score[5] == "informative only", "{score:?}");
    // The script removes the stickers it made (`mktemp -d`), the benchmarks their temporary homes (torch keeps its
    // own cache there).
    let left: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("tmp.") || n.starts_with("rush-"))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}
