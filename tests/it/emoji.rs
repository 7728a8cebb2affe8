//! The emoji-art dataset built for real from the pinned npm tarballs (scripts/setup.sh fetches them; when they are
//! missing these tests fail, they never skip): counts per style, decodable PNGs, 350 multilingual tags, splits by
//! family, byte-identical rebuilds, the CLI's `--styles`, `--force` and missing-tarball behaviour, and a short
//! training run on the built data that ends above chance on the validation style.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use rush::core::event::{Event, EventLine};
use rush::core::spec::{ResolvedSpec, Spec};
use rush::data::emoji::{self, BuildOptions, BuildReport, Recipe, Split};
use rush::data::image::load_rgb;
use rush::data::layout::{SplitName, read_test, read_test_labels, read_train};
use rush::data::split::split_by_package;

/// Small enough for CI: the whole build at 32 px takes a few seconds on 2 cores.
const SIZE: u32 = 32;

/// Images per style as shared/DATASETS.md reports them (128 px; the count does not depend on the size).
const EXPECTED: [(&str, usize); 10] = [
    ("noto", 1555),
    ("noto-v1", 1138),
    ("openmoji", 1555),
    ("openmoji-black", 1555),
    ("emojione", 1019),
    ("emojione-v1", 863),
    ("emojione-monotone", 1016),
    ("streamline", 554),
    ("fxemoji", 600),
    ("twemoji", 1555),
];

fn tarballs() -> PathBuf {
    std::env::var_os("RUSH_NPM_CACHE").map(PathBuf::from).unwrap_or_else(emoji::npm::default_cache_dir)
}

fn build(out: &Path, threads: usize) -> BuildReport {
    let options = BuildOptions {
        recipe: Recipe::builtin().unwrap(),
        out: out.to_path_buf(),
        size: SIZE,
        tarballs: tarballs(),
        styles: Vec::new(),
        threads: Some(threads),
        progress: false,
        force: false,
    };
    emoji::build(&options).unwrap_or_else(|e| panic!("building the emoji dataset: {e}"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Data rows of a CSV/TSV file (header checked, then dropped).
fn rows(path: &Path, header: &str) -> Vec<String> {
    let text = read(path);
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some(header), "{}", path.display());
    lines.map(str::to_string).collect()
}

/// `pkg,sticker,"1,2,3"` -> (pkg, sticker, [1, 2, 3]).
fn parse_tagged(line: &str) -> (String, String, Vec<u16>) {
    let (head, tags) = line.split_once(",\"").unwrap_or_else(|| panic!("no quoted tags in `{line}`"));
    let (a, b) = head.split_once(',').unwrap();
    let tags = tags.trim_end_matches('"').split(',').map(|t| t.parse().unwrap()).collect();
    (a.to_string(), b.to_string(), tags)
}

fn files_under(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.insert(path.strip_prefix(dir).unwrap().to_path_buf(), std::fs::read(&path).unwrap());
            }
        }
    }
    out
}

fn decode_rgba(bytes: &[u8]) -> (u32, u32, Vec<u8>) {
    let mut reader = png::Decoder::new(std::io::Cursor::new(bytes)).read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!((info.color_type, info.bit_depth), (png::ColorType::Rgba, png::BitDepth::Eight));
    (info.width, info.height, buf)
}

#[test]
fn emoji_dataset_builds_every_style_in_the_airush_layout_byte_identically() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let report = build(&a, 2);
    println!("{report}");
    // AI RUSH's `train/train_label`: each sticker's label is its smallest tag, and the argmax of its row.
    crate::common::assert_train_label_is_argmax_of_the_first_tag(&a);
    let recipe = Recipe::builtin().unwrap();
    let train = a.join("train").join("train_data");
    let test = a.join("test").join("test_data");

    // Every style yields about the count shared/DATASETS.md reports, and the files and rows agree with the report.
    let csv = rows(&train.join("train_with_valid_tags.csv"), "package_id,sticker_id,tags");
    let order = rows(&test.join("test_order.csv"), "index,package_id,sticker_id");
    for (style, expected) in EXPECTED {
        let got = report.styles.iter().find(|s| s.name == style).unwrap_or_else(|| panic!("no report for {style}"));
        let off = (got.images as f64 - expected as f64).abs() / expected as f64;
        assert!(off <= 0.03, "{style}: {} images, DATASETS.md reports {expected}", got.images);
        let split = got.split;
        let dir = if split == Split::Test { &test } else { &train }.join("images").join(style);
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), got.images, "{}", dir.display());
        let listed = if split == Split::Test {
            order.iter().filter(|l| l.split(',').nth(1) == Some(style)).count()
        } else {
            csv.iter().filter(|l| l.starts_with(&format!("{style},"))).count()
        };
        assert_eq!(listed, got.images, "{style}: rows");
    }

    // Every PNG decodes as SIZE x SIZE RGBA with something drawn, and through the trainer's loader.
    let files = files_under(&a);
    let pngs: Vec<_> = files.iter().filter(|(p, _)| p.extension().is_some_and(|e| e == "png")).collect();
    assert_eq!(pngs.len(), report.images());
    for (path, bytes) in &pngs {
        let (w, h, px) = decode_rgba(bytes);
        assert_eq!((w, h), (SIZE, SIZE), "{}", path.display());
        assert!(px.chunks_exact(4).any(|p| p[3] > 0), "{} is blank", path.display());
        let rgb = load_rgb(&a.join(path), SIZE).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(rgb.len(), (SIZE * SIZE * 3) as usize);
    }

    // The data layer reads it all without a problem: train + valid samples, 350 tags, fxemoji as validation, the test
    // split in order with its labels.
    let train_set = read_train(&a).unwrap();
    assert!(train_set.problems.is_empty(), "{:?}", &train_set.problems[..train_set.problems.len().min(5)]);
    assert_eq!(train_set.samples.len(), csv.len());
    assert_eq!(train_set.tags.len(), 350);
    let valid: Vec<&str> = train_set
        .packages
        .iter()
        .filter(|p| p.split == Some(SplitName::Valid))
        .map(|p| p.package_id.as_str())
        .collect();
    assert_eq!(valid, ["fxemoji"]);
    let test_set = read_test(&a).unwrap();
    assert!(test_set.problems.is_empty());
    assert_eq!(test_set.samples.len(), order.len());
    let test_labels = read_test_labels(&a.join("test").join("test_labels.csv")).unwrap();
    assert_eq!(test_labels.len(), order.len());

    // Tags: 1 to 3 distinct ids < 350 per sticker, the first a class; about the recipe's number of classes.
    assert!((150..=250).contains(&report.classes), "{} classes", report.classes);
    let tagged: Vec<_> = csv.iter().map(|l| parse_tagged(l)).collect();
    for (pkg, sticker, tags) in &tagged {
        assert!((1..=3).contains(&tags.len()), "{pkg}/{sticker}: {tags:?}");
        assert!(tags.iter().all(|&t| t < 350) && (tags[0] as usize) < report.classes, "{pkg}/{sticker}: {tags:?}");
        assert_eq!(tags.iter().collect::<BTreeSet<_>>().len(), tags.len(), "{pkg}/{sticker}: {tags:?}");
        assert!(train.join("images").join(pkg).join(format!("{sticker}.png")).is_file());
    }
    // The same emoji carries the same tags in every style.
    let mut by_sticker: BTreeMap<&str, &Vec<u16>> = BTreeMap::new();
    for (_, sticker, tags) in &tagged {
        assert_eq!(*by_sticker.entry(sticker).or_insert(tags), tags, "{sticker}");
    }

    // tag.tsv: exactly 350 tags with keywords in en, ko (Hangul) and ja (kana or kanji) for every one.
    let tag_rows = rows(&train.join("tag.tsv"), "tag\tkeywords\tlanguages\tname");
    assert_eq!(tag_rows.len(), 350);
    let hangul = |s: &str| s.chars().any(|c| ('\u{ac00}'..='\u{d7a3}').contains(&c));
    let japanese =
        |s: &str| s.chars().any(|c| ('\u{3040}'..='\u{30ff}').contains(&c) || ('\u{4e00}'..='\u{9fff}').contains(&c));
    let mut names = BTreeSet::new();
    for (id, row) in tag_rows.iter().enumerate() {
        let cols: Vec<&str> = row.split('\t').collect();
        assert_eq!(cols.len(), 4, "tag.tsv row {id}: {row}");
        assert_eq!(cols[0], id.to_string());
        let langs: Vec<&str> = cols[2].split('|').collect();
        let words: Vec<&str> = cols[1].split('|').collect();
        assert_eq!(langs.len(), words.len(), "tag {id}: {row}");
        let of = |lang: &str| words[langs.iter().position(|l| *l == lang).unwrap_or_else(|| panic!("no {lang}"))];
        assert!(!of("en").is_empty() && !of("zh").is_empty(), "tag {id}: {row}");
        assert!(hangul(of("ko")), "tag {id} has no Korean keyword: {row}");
        assert!(japanese(of("ja")), "tag {id} has no Japanese keyword: {row}");
        assert!(names.insert(cols[3].to_string()), "tag name {} twice", cols[3]);
    }

    // Splits: by family, never sharing one; the test family only under test/, its labels outside test_data.
    let packages = rows(&train.join("packages.tsv"), "package_id\tstyle\tfamily\tsource\tlicence\tsplit");
    let mut family_splits: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for row in &packages {
        let cols: Vec<&str> = row.split('\t').collect();
        assert_eq!(cols.len(), 6, "{row}");
        assert!(cols[3].contains('@') && !cols[4].is_empty(), "{row}");
        family_splits.entry(cols[2].to_string()).or_default().insert(cols[5].to_string());
    }
    let test_families: BTreeSet<String> = order
        .iter()
        .map(|l| l.split(',').nth(1).unwrap())
        .map(|pkg| recipe.styles.iter().find(|s| s.name == pkg).unwrap().family.clone())
        .collect();
    assert_eq!(test_families, BTreeSet::from(["twitter".to_string()]));
    for (family, splits) in &family_splits {
        assert_eq!(splits.len(), 1, "family {family} is in {splits:?}");
        assert!(!test_families.contains(family), "family {family} is in train and test");
    }
    assert_eq!(family_splits["fxemoji"], BTreeSet::from(["valid".to_string()]));
    assert_eq!(family_splits["google"], BTreeSet::from(["train".to_string()]));
    let labels = rows(&a.join("test").join("test_labels.csv"), "index,tags");
    assert_eq!(labels.len(), order.len());
    for (i, (label, line)) in labels.iter().zip(&order).enumerate() {
        assert!(line.starts_with(&format!("{i},")) && label.starts_with(&format!("{i},\"")), "{line} / {label}");
    }
    assert!(files.keys().all(|p| !p.starts_with("test/test_data") || !p.ends_with("test_labels.csv")));

    // Licences travel with the data.
    let licences = read(&a.join("LICENSES.md"));
    for style in &recipe.styles {
        assert!(licences.contains(&format!("| {} | {} |", style.name, style.family)), "{}", style.name);
        assert!(licences.contains(&style.licence));
    }

    // Deterministic: another build, on one thread, gives the same bytes in every file.
    build(&b, 1);
    let again = files_under(&b);
    assert_eq!(files.keys().collect::<Vec<_>>(), again.keys().collect::<Vec<_>>());
    for (path, bytes) in &files {
        assert!(again[path] == *bytes, "{} differs between builds", path.display());
    }
}

fn rush(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_rush")).args(args).output().unwrap()
}

#[test]
fn the_cli_builds_a_subset_of_styles_and_replaces_only_with_force() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("sub");
    let out_arg = out.to_str().unwrap();
    let cache = tarballs();
    let args =
        ["dataset", "build", "emoji", "--out", out_arg, "--size", "16", "--styles", "fxemoji,twemoji", "--quiet"];
    let mut args: Vec<&str> = args.to_vec();
    args.extend(["--tarballs", cache.to_str().unwrap()]);
    let run = rush(&args);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&run.stderr));
    assert!(stdout.contains("images/s") && stdout.contains("fxemoji") && !stdout.contains("noto"), "{stdout}");

    let packages = read(&out.join("train/train_data/packages.tsv"));
    assert_eq!(packages.lines().skip(1).map(|l| l.split('\t').next().unwrap()).collect::<Vec<_>>(), ["fxemoji"]);
    let train_dirs: Vec<_> =
        std::fs::read_dir(out.join("train/train_data/images")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(train_dirs, ["fxemoji"]);
    assert!(out.join("test/test_data/images/twemoji/1f600.png").is_file());
    assert_eq!(decode_rgba(&std::fs::read(out.join("test/test_data/images/twemoji/1f600.png")).unwrap()).0, 16);
    assert_eq!(read(&out.join("train/train_data/tag.tsv")).lines().count(), 351);

    let again = rush(&args);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
    args.push("--force");
    assert!(rush(&args).status.success());
    assert!(!tmp.path().join(".sub.partial").exists());
}

#[test]
fn missing_tarballs_fail_naming_the_file_and_the_fix() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("x");
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let run =
        rush(&["dataset", "build", "emoji", "--out", out.to_str().unwrap(), "--tarballs", empty.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success());
    assert!(stderr.contains("emojibase-data-17.0.0.tgz") && stderr.contains("fetch-npm.sh"), "{stderr}");
    assert!(!out.exists());

    let run = rush(&["dataset", "build", "emoji", "--out", out.to_str().unwrap(), "--styles", "apple"]);
    assert!(String::from_utf8_lossy(&run.stderr).contains("unknown style `apple`"));
}

/// Learning on the built data, measured where the task measures it: on an art style (fxemoji, the `valid` family)
/// that the model never saw. Two training styles and the validation style at 32 px keep it to about a minute.
#[test]
fn training_on_the_built_data_ends_above_chance_on_the_validation_style() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("emoji-32");
    let build = rush(&[
        "dataset",
        "build",
        "emoji",
        "--out",
        data.to_str().unwrap(),
        "--size",
        "32",
        "--styles",
        "noto,emojione,fxemoji",
        "--quiet",
        "--tarballs",
        tarballs().to_str().unwrap(),
    ]);
    assert!(build.status.success(), "{}", String::from_utf8_lossy(&build.stderr));

    // Chance as shared/CONTRACT.md defines it, from the validation split the trainer uses.
    let set = read_train(&data).unwrap_or_else(|e| panic!("{e}"));
    let split = split_by_package(&set, 0.1, 0);
    let valid_styles: BTreeSet<&str> = split.valid.iter().map(|&i| set.samples[i].package_id.as_str()).collect();
    assert_eq!(valid_styles, BTreeSet::from(["fxemoji"]), "packages.tsv names the validation style");
    let mut counts: BTreeMap<u16, usize> = BTreeMap::new();
    for &i in &split.valid {
        *counts.entry(set.samples[i].label()).or_default() += 1;
    }
    let majority = *counts.values().max().unwrap() as f64 / split.valid.len() as f64;
    let chance = (1.0 / counts.len() as f64).max(majority);

    let session = tmp.path().join("session");
    std::fs::create_dir(&session).unwrap();
    let yaml = "dataset: emoji\nmodel: baseline_cnn\nimage_size: 32\nbatch_size: 64\nepochs: 3\nseed: 0\n\
                optimizer: {name: adamw, lr: 0.003, weight_decay: 0.05}\nschedule: {name: cosine, warmup_epochs: 0.5}\n\
                augment: {random_resized_crop: [0.7, 1.0], hflip: true}\nprecision: fp32\nresources: {gpus: 0}\n";
    let resolved = ResolvedSpec {
        session: "test/emoji/1".into(),
        dataset_path: data.clone(),
        init_from: None,
        runtime: None,
        spec: Spec::parse("emoji.yaml", yaml).unwrap_or_else(|e| panic!("{e}")),
    };
    std::fs::write(session.join("spec.yaml"), resolved.to_yaml().unwrap()).unwrap();
    let started = std::time::Instant::now();
    let run = Command::new(env!("CARGO_BIN_EXE_rush"))
        .arg("train")
        .arg(&session)
        .env("CUDA_VISIBLE_DEVICES", "")
        .env("OMP_NUM_THREADS", "1")
        .env_remove("RUSH_HOME")
        .output()
        .unwrap();
    assert!(run.status.success(), "rush train failed:\n{}", String::from_utf8_lossy(&run.stderr));
    let best = String::from_utf8_lossy(&run.stdout)
        .lines()
        .filter_map(|l| match EventLine::parse(l).unwrap_or_else(|e| panic!("{e}")).event {
            Event::Epoch { val_acc, .. } => Some(val_acc),
            _ => None,
        })
        .fold(0.0, f64::max);
    println!(
        "emoji 32 px: {} train / {} valid images, {} valid classes, chance {chance:.4}, best val_acc {best:.4}, {:.0} s",
        split.train.len(),
        split.valid.len(),
        counts.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(best >= 3.0 * chance, "best val_acc {best:.4} is not 3 x chance {chance:.4}");
}
