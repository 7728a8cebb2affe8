//! The spec as users meet it: the shipped examples, docs/spec.md's documented defaults, `rush spec schema` checked by a
//! real JSON Schema validator (Rust's `jsonschema`, and Python's, which refuses every hostile spec rush refuses for
//! a value), and a generated corpus of hostile specs that must each be refused without a panic.

use std::path::{Path, PathBuf};
use std::time::Instant;

use rand::{Rng, SeedableRng};
use rush::core::spec::{BeyondSchema, MAX_SPEC_BYTES, ModelName, Spec, SpecError, apply_overrides, beyond_schema};
use serde_json::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn examples() -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = std::fs::read_dir(repo().join("examples"))
        .expect("examples/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .map(|p| (format!("examples/{}", name(&p)), std::fs::read_to_string(&p).expect("read example")))
        .collect();
    out.sort();
    out
}

fn name(p: &Path) -> String {
    p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

/// The spec reference, docs/spec.md.
fn spec_doc() -> String {
    std::fs::read_to_string(repo().join("docs/spec.md")).expect("docs/spec.md")
}

/// The fenced ```yaml blocks of docs/spec.md, in order.
fn spec_doc_yaml_blocks() -> Vec<String> {
    let doc = spec_doc();
    doc.split("```yaml\n").skip(1).map(|b| b.split("```").next().unwrap_or("").to_string()).collect()
}

fn yaml_to_json(text: &str) -> Value {
    serde_saphyr::from_str(text).expect("YAML")
}

#[test]
fn examples_parse_and_expand() {
    let examples = examples();
    let names: Vec<&str> = examples.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "examples/asha.yaml",
            "examples/cpu-demo.yaml",
            "examples/gpu-best.yaml",
            "examples/gpu-resnet50.yaml",
            "examples/sweep.yaml"
        ]
    );
    for (file, text) in &examples {
        let specs = Spec::load(file, text.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        assert!(!specs.is_empty(), "{file}");
    }
    let asha = Spec::load("asha", examples[0].1.as_bytes()).unwrap();
    assert_eq!(asha.len(), 9);
    let searcher = asha[0].searcher.as_ref().expect("a searcher");
    assert_eq!(searcher.asha().rungs(asha[0].epochs), [1, 3], "the example's comment counts 9 + 3 x 2 + 6 = 21 epochs");
    let examples = &examples[1..];
    let cpu = Spec::parse("cpu", &examples[0].1).unwrap();
    assert_eq!((cpu.dataset.as_str(), cpu.image_size, cpu.batch_size), ("emoji", 48, 64));
    assert_eq!(serde_json::to_value(cpu.resources.gpus).unwrap(), 0);
    // bf16: CPU autocast where the CPU has native bf16, fp32 elsewhere (BENCHMARKS.md, "CPU bf16").
    assert_eq!(serde_json::to_value(cpu.precision).unwrap(), "bf16");
    // gpu-best lists every recipe option; each is on only once measured to help (BENCHMARKS.md).
    let best = Spec::parse("gpu-best", &examples[1].1).unwrap();
    assert_eq!(
        (best.model, best.image_size, best.precision),
        (ModelName::Resnet50, 128, rush::core::spec::Precision::Bf16)
    );
    for option in ["rotate:", "grayscale:", "random_erasing:", "mixup:", "cutmix:", "ema:"] {
        assert!(examples[1].1.contains(option), "examples/gpu-best.yaml lists `{option}`");
    }
    let gpu = Spec::parse("gpu", &examples[2].1).unwrap();
    assert_eq!((gpu.model, gpu.image_size, gpu.batch_size), (ModelName::Resnet50, 128, 256));
    assert_eq!(serde_json::to_value(gpu.resources.gpus).unwrap(), 1);
    let sweep = Spec::load("sweep", examples[3].1.as_bytes()).unwrap();
    assert_eq!(sweep.len(), 4);
    assert_eq!(sweep[0].memo, "lr x model [model=baseline_cnn optimizer.lr=0.001]");
}

#[test]
fn the_spec_doc_documents_every_default_and_its_sweeps() {
    let blocks = spec_doc_yaml_blocks();
    assert!(blocks.len() >= 3, "the full example and two sweeps");
    let documented = Spec::parse("docs/spec.md", &blocks[0]).unwrap_or_else(|e| panic!("{e}"));
    let defaults = Spec { dataset: "emoji".into(), ..Spec::default() };
    assert_eq!(documented, defaults, "docs/spec.md's full example must show exactly the defaults");
    // Every field of the spec appears in the full example (grid/random as the trailing comment).
    let json = serde_json::to_value(&defaults).unwrap();
    for (key, value) in json.as_object().unwrap() {
        assert!(blocks[0].contains(&format!("{key}:")), "docs/spec.md's example lacks `{key}`");
        if let Value::Object(inner) = value {
            for k in inner.keys() {
                assert!(blocks[0].contains(&format!("{k}:")), "docs/spec.md's example lacks `{key}.{k}`");
            }
        }
    }
    assert!(blocks[0].contains("grid:") && blocks[0].contains("random:"));
    let grid = Spec::load("docs/spec.md", format!("dataset: emoji\n{}", blocks[1]).as_bytes()).unwrap();
    assert_eq!(grid.len(), 4);
    let random = Spec::load("docs/spec.md", format!("dataset: emoji\n{}", blocks[2]).as_bytes()).unwrap();
    assert_eq!(random.len(), 8);
    let asha = Spec::load("docs/spec.md", format!("dataset: emoji\n{}", blocks[3]).as_bytes()).unwrap();
    assert_eq!(asha.len(), 9);
    assert_eq!(asha[0].searcher.as_ref().map(|s| s.max_concurrent), Some(Some(4)));
    let doc = spec_doc();
    let args = doc.split("-a \"").nth(1).and_then(|s| s.split('"').next()).expect("an -a example");
    let overridden = apply_overrides(&defaults, args).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(overridden.augment.random_resized_crop, Some([0.5, 1.0]));
}

#[test]
fn spec_schema_command_accepts_examples_and_rejects_bad_specs() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rush")).args(["spec", "schema"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let schema: Value = serde_json::from_slice(&out.stdout).expect("the schema is JSON");
    assert_eq!(schema["$schema"], "https://json-schema.org/draft/2020-12/schema");
    let validator = jsonschema::validator_for(&schema).expect("a valid JSON Schema");

    let mut good: Vec<(String, String)> = examples();
    good.extend(spec_doc_yaml_blocks().into_iter().enumerate().map(|(i, b)| {
        let text = if b.contains("dataset:") { b } else { format!("dataset: emoji\n{b}") };
        (format!("docs/spec.md block {i}"), text)
    }));
    good.push(("minimal".into(), "dataset: emoji\n".into()));
    for (file, text) in &good {
        let errors: Vec<String> = validator.iter_errors(&yaml_to_json(text)).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{file}: {errors:?}");
        assert!(Spec::load(file, text.as_bytes()).is_ok(), "{file}");
    }

    let bad = [
        "dataset: emoji\nmodle: resnet18\n",         // unknown field
        "dataset: emoji\noptimizer: {lrr: 0.1}\n",   // unknown nested field
        "dataset: emoji\nepochs: ten\n",             // wrong type
        "dataset: emoji\nepochs: 0\n",               // out of range
        "dataset: emoji\nmodel: vgg16\n",            // unknown model
        "dataset: emoji\nresources: {gpus: 2}\n",    // multi-GPU
        "dataset: emoji\naugment: {hflip: maybe}\n", // wrong type
        "dataset: ../etc\n",                         // a path, not a name
        "memo: no dataset\n",                        // dataset is required
        "dataset: emoji\nrandom: {count: 2}\n",      // random without space
        "dataset: emoji\ngrid: {model: resnet18}\n", // grid values must be a list
        "dataset: emoji\nprecision: fp16\n",         // unknown precision
    ];
    for text in bad {
        assert!(!validator.is_valid(&yaml_to_json(text)), "schema accepted {text:?}");
        assert!(Spec::parse("bad.yaml", text).is_err(), "parser accepted {text:?}");
    }
}

/// What every refusal must look like: non-empty, one line, naming its source first.
fn check_refusal(source: &str, e: &impl std::fmt::Display) {
    let m = e.to_string();
    assert!(m.starts_with(source) && m.len() > source.len() + 2, "{m:?}");
    assert!(!m.contains('\n'), "one line: {m:?}");
    assert!(m.len() < 2000, "bounded message ({} bytes)", m.len());
}

/// Byte offsets at which a prefix of `text` ends inside an unclosed flow collection (`{...` or `[...`): a truncated
/// file cut there is never valid YAML.
fn unbalanced_cuts(text: &str) -> Vec<usize> {
    let mut depth = 0i32;
    let mut in_comment = false;
    let mut cuts = vec![];
    for (i, c) in text.char_indices() {
        match c {
            '#' => in_comment = true,
            '\n' => in_comment = false,
            '{' | '[' if !in_comment => depth += 1,
            '}' | ']' if !in_comment => depth -= 1,
            _ => {}
        }
        if depth > 0 {
            cuts.push(i + c.len_utf8());
        }
    }
    cuts
}

/// Byte offsets of letters in mapping keys (`key:` at a line start or after `{` / `, `): turning one into `Q` makes
/// a key that names no field.
fn key_letters(text: &str) -> Vec<usize> {
    let bytes = text.as_bytes();
    let mut out = vec![];
    let mut i = 0;
    while i < bytes.len() {
        let starts_key = i == 0 || matches!(bytes[i - 1], b'\n' | b'{') || (i >= 2 && &bytes[i - 2..i] == b", ");
        let line_start = text[..i].rfind('\n').map_or(0, |p| p + 1);
        let in_comment = text[line_start..i].contains('#');
        if starts_key && !in_comment {
            let mut j = i;
            while j < bytes.len() && bytes[j] == b' ' {
                j += 1;
            }
            let k = j;
            while j < bytes.len() && (bytes[j].is_ascii_alphanumeric() || matches!(bytes[j], b'_' | b'.')) {
                j += 1;
            }
            if j > k && bytes.get(j) == Some(&b':') {
                out.extend((k..j).filter(|&p| bytes[p].is_ascii_lowercase()));
            }
            i = j.max(i + 1);
        } else {
            i += 1;
        }
    }
    out
}

fn billion_laughs(depth: usize, width: usize, indent: &str) -> String {
    let mut s = format!("{indent}l0: &l0 [{}]\n", vec!["lol"; width].join(", "));
    for i in 1..depth {
        s += &format!("{indent}l{i}: &l{i} [{}]\n", vec![format!("*l{}", i - 1); width].join(", "));
    }
    s
}

/// The generated corpus of hostile specs, as (kind, bytes): every case is bad by construction (for a daemon, bad with
/// the dataset `emoji` registered). Also dropped into a running daemon by `reliability::hostile_specs_*`.
pub fn hostile_corpus() -> Vec<(String, Vec<u8>)> {
    let mut corpus: Vec<(String, Vec<u8>)> = vec![];
    let mut add = |kind: &str, bytes: Vec<u8>| corpus.push((kind.to_string(), bytes));
    let sources: Vec<(String, String)> = examples()
        .into_iter()
        .chain(std::iter::once((
            "docs/spec.md".to_string(),
            spec_doc_yaml_blocks().into_iter().next().expect("docs/spec.md's example"),
        )))
        .collect();
    // Flow-style copies of the examples, so truncation has many cuts inside `{...}`.
    let flows: Vec<String> = sources
        .iter()
        .map(|(_, t)| {
            let json = yaml_to_json(t);
            let mut flow = String::new();
            for (k, v) in json.as_object().expect("a mapping") {
                flow += &format!("{k}: {v}\n");
            }
            flow
        })
        .collect();

    for (_, text) in &sources {
        for cut in unbalanced_cuts(text) {
            add("truncated", text.as_bytes()[..cut].to_vec());
        }
        for p in key_letters(text) {
            let mut b = text.as_bytes().to_vec();
            b[p] = b'Q';
            add("key byte flipped", b);
        }
        for (p, _) in text.match_indices('\n').step_by(2) {
            let mut b = text.as_bytes().to_vec();
            b.insert(p + 1, 0xff);
            add("invalid UTF-8", b);
        }
    }
    for flow in &flows {
        for cut in unbalanced_cuts(flow).into_iter().step_by(3) {
            add("truncated flow", flow.as_bytes()[..cut].to_vec());
        }
    }

    // Wrong types and out-of-range values, per field.
    let wrong: &[(&str, &[&str])] = &[
        ("dataset", &["[a]", "{a: 1}", "''", "../x", "/abs", "a/b", "..", ".hidden", "x/../y", "'a b'", "~", "-x"]),
        ("memo", &["[a]", "{a: 1}"]),
        ("model", &["vgg16", "resnet", "ResNet18", "efficientnet_b7", "18", "''", "[resnet18]", "~", "{a: 1}"]),
        ("image_size", &["abc", "0", "7", "1025", "-1", "1.5", "99999999999999999999", "[1]", "true", ".inf"]),
        ("batch_size", &["abc", "0", "65537", "-3", "2.5", "1e400", "{}", "~"]),
        ("epochs", &["abc", "0", "10001", "-1", "0x7fffffffffffffff", "1e9"]),
        ("optimizer", &["adamw", "[adamw]", "{name: adam}", "{lr: 0}", "{lr: -1}", "{lr: 11}", "{lr: .nan}"]),
        ("optimizer", &["{lr: .inf}", "{lr: 1e999}", "{weight_decay: 2}", "{momentum: 1}", "{nesterov: 3}"]),
        ("schedule", &["cosine", "{name: linear}", "{warmup_epochs: -1}", "{gamma: 0}", "{gamma: 2}"]),
        ("schedule", &["{milestones: [3, 2]}", "{milestones: [0]}", "{milestones: 5}", "{min_lr: 1}"]),
        ("loss", &["bce", "{name: focal}", "{label_smoothing: 1}", "{label_smoothing: -0.1}", "{extra: 1}"]),
        ("augment", &["{random_resized_crop: [0, 1]}", "{random_resized_crop: [0.9, 0.5]}", "{hflip: 2}"]),
        ("augment", &["{random_resized_crop: [0.5, 1.5]}", "{random_resized_crop: [0.5]}", "{color_jitter: 2}"]),
        ("precision", &["fp16", "int8", "32", "[bf16]"]),
        ("resources", &["{gpus: 2}", "{gpus: -1}", "{gpus: all}", "{gpus: 1.5}", "{cpus: 4}", "gpu"]),
        ("seed", &["-1", "abc", "18446744073709551616", "1.5", "[1]"]),
        ("valid_fraction", &["0", "1", "-0.5", "abc", ".nan"]),
        ("checkpoints", &["{keep_best: -1}", "{keep_last: maybe}", "{keep: 3}", "3"]),
        ("resume", &["2", "[true]", "{a: 1}"]),
        ("priority", &["2147483648", "-2147483649", "abc", "1.5"]),
        (
            "grid",
            &["{}", "{epochs: []}", "{optimizer.lrr: [1]}", "{epochs: [a]}", "{grid: [1]}", "[1]", "{'a b': [1]}"],
        ),
        ("grid", &["{model: [vgg]}", "{dataset: ['../x']}", "{optimizer.lr: [-1]}", "{epochs: 3}"]),
        ("random", &["{count: 3}", "{count: 0, space: {seed: {uniform: [0, 1]}}}", "{count: 2, space: {}}"]),
        ("random", &["{count: 2, space: {seed: {normal: [0, 1]}}}", "{count: 2, space: {model: {choice: [vgg]}}}"]),
        ("random", &["{count: 2, space: {optimizer.lr: {log_uniform: [-1, 1]}}}", "{count: -2, space: {}}"]),
        (
            "random",
            &["{count: 100000, space: {seed: {uniform: [0, 9]}}}", "{count: 2, space: {x.y: {uniform: [0, 1]}}}"],
        ),
    ];
    for (field, values) in wrong {
        for value in *values {
            add(
                "wrong value",
                format!("dataset: emoji\n{field}: {value}\n")
                    .replace("dataset: emoji\ndataset:", "dataset:")
                    .into_bytes(),
            );
            if !matches!(*field, "grid" | "random") {
                add("wrong value in a grid", format!("dataset: emoji\ngrid: {{{field}: [{value}]}}\n").into_bytes());
            }
        }
    }
    // Huge numbers and big sweeps.
    for n in ["1e400", "-1e400", "18446744073709551616", "340282366920938463463374607431768211456", &"9".repeat(5000)] {
        for field in ["epochs", "seed", "image_size", "priority", "batch_size"] {
            add("huge number", format!("dataset: emoji\n{field}: {n}\n").into_bytes());
        }
    }
    let many: Vec<String> = (1..=33).map(|i| i.to_string()).collect();
    add("huge grid", format!("dataset: emoji\ngrid: {{seed: [{0}], epochs: [{0}]}}\n", many.join(", ")).into_bytes());
    // Alias bombs, at the top level, inside a grid (where any value is accepted), and as a memo.
    for (depth, width) in [(10, 10), (9, 9), (6, 30), (20, 2), (4, 200)] {
        add("alias bomb", format!("dataset: emoji\n{}", billion_laughs(depth, width, "")).into_bytes());
        add(
            "alias bomb",
            format!("dataset: emoji\ngrid:\n  seed: [1]\n{}", billion_laughs(depth, width, "  ")).into_bytes(),
        );
        let last = depth - 1;
        add(
            "alias bomb",
            format!("dataset: emoji\ngrid:\n  seed: [1]\n{}memo: *l{last}\n", billion_laughs(depth, width, "  "))
                .into_bytes(),
        );
    }
    let long = "x".repeat(100_000);
    add(
        "quadratic alias",
        format!("dataset: emoji\nmemo: &m {long}\ngrid: {{memo: [{}]}}\n", ["*m"; 9].join(", ")).into_bytes(),
    );
    add(
        "deep nesting",
        format!("dataset: emoji\ngrid: {{seed: {}1{}}}\n", "[".repeat(10_000), "]".repeat(10_000)).into_bytes(),
    );
    add(
        "deep nesting",
        format!("dataset: emoji\ngrid:\n{}", (1..200).map(|i| format!("{}a:\n", " ".repeat(i))).collect::<String>())
            .into_bytes(),
    );
    add(
        "anchor storm",
        format!(
            "dataset: emoji\ngrid: {{seed: [{}]}}\n",
            (0..5000).map(|i| format!("&a{i} {i}")).collect::<Vec<_>>().join(", ")
        )
        .into_bytes(),
    );
    add("documents", b"dataset: emoji\n---\ndataset: emoji\n".to_vec());
    add("documents", "---\n".repeat(5000).into_bytes());
    add("tags", b"dataset: !!python/object:os.system emoji\n".to_vec());
    add("tags", b"dataset: emoji\nmemo: !<tag:yaml.org,2002:js/function> x\n".to_vec());
    add("tags", b"dataset: emoji\nepochs: !!str 3\n".to_vec());
    add("duplicate key", b"dataset: emoji\nepochs: 3\nepochs: 4\n".to_vec());
    add("not a mapping", b"- dataset: emoji\n".to_vec());
    add("not a mapping", b"emoji\n".to_vec());
    add("not a mapping", b"~\n".to_vec());
    add("empty", vec![]);
    add("comments only", b"# nothing here\n".to_vec());
    // Files too big to read: just over the cap, and 50 MB.
    let mut big = b"dataset: emoji\nmemo: ".to_vec();
    big.resize(MAX_SPEC_BYTES + 1, b'x');
    add("over 1 MiB", big);
    let mut huge = b"dataset: emoji\n".to_vec();
    huge.extend(std::iter::repeat_n(b"# padding comment line\n".as_slice(), 50 * (1 << 20) / 23).flatten());
    add("50 MB", huge);
    // Binary junk: random bytes with at least one byte that is never UTF-8.
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(42);
    for i in 0..200 {
        let len = rng.random_range(1..4096);
        let mut b: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        let at = rng.random_range(0..b.len());
        b[at] = 0xfe;
        add("binary junk", b);
        if i % 4 == 0 {
            add("NUL bytes", format!("dataset: emoji\nmemo: a{}b\n", "\0".repeat(i + 1)).into_bytes());
        }
    }
    corpus
}

/// Each generated spec must be refused (every case is bad by construction); none may panic.
#[test]
fn a_generated_corpus_of_hostile_specs_is_refused() {
    let started = Instant::now();
    let corpus = hostile_corpus();
    let total = corpus.len();
    let mut kinds = std::collections::BTreeMap::<String, usize>::new();
    let mut accepted = vec![];
    let mut sample = std::collections::BTreeMap::<String, String>::new();
    for (kind, bytes) in &corpus {
        let file = "hostile.yaml";
        match Spec::load(file, bytes) {
            Ok(_) => accepted.push(format!("{kind}: {:?}", String::from_utf8_lossy(&bytes[..bytes.len().min(200)]))),
            Err(e) => {
                check_refusal(file, &e);
                sample.entry(kind.clone()).or_insert_with(|| e.to_string());
            }
        }
        *kinds.entry(kind.clone()).or_default() += 1;
    }
    assert!(accepted.is_empty(), "{} hostile specs were accepted:\n{}", accepted.len(), accepted.join("\n"));
    eprintln!("refused {total} hostile specs in {:.2?}: {kinds:?}", started.elapsed());
    for (kind, message) in &sample {
        eprintln!("  {kind}: {message}");
    }
    assert!(total >= 1000, "the corpus has {total} specs");
}

/// Random mutations of good specs and random override strings: no panic, every refusal well-formed, and anything
/// accepted is a valid spec. Not every mutation is bad, so this checks behaviour, not rejection.
#[test]
fn random_mutations_never_panic() {
    let started = Instant::now();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let sources: Vec<Vec<u8>> = examples().into_iter().map(|(_, t)| t.into_bytes()).collect();
    let (mut accepted, mut refused) = (0, 0);
    let base = Spec { dataset: "emoji".into(), ..Spec::default() };
    let alphabet = b" \t\n:{}[],-#&*!|>'\"?%@`0123456789.eE+_abcdefxyz";
    for i in 0..3000 {
        let mut b = sources[i % sources.len()].clone();
        for _ in 0..rng.random_range(1..8) {
            let at = rng.random_range(0..b.len());
            match rng.random_range(0..4) {
                0 => b[at] = alphabet[rng.random_range(0..alphabet.len())],
                1 => b[at] = rng.random(),
                2 => b.truncate(at.max(1)),
                _ => b.insert(at, alphabet[rng.random_range(0..alphabet.len())]),
            }
        }
        match Spec::load("mutant.yaml", &b) {
            Ok(specs) => {
                accepted += 1;
                assert!(specs.iter().all(|s| s.validate("x").is_ok() && s.grid.is_none() && s.random.is_none()));
            }
            Err(e) => {
                refused += 1;
                check_refusal("mutant.yaml", &e);
            }
        }
        let args: String =
            (0..rng.random_range(0..60)).map(|_| alphabet[rng.random_range(0..alphabet.len())] as char).collect();
        let args = if i % 2 == 0 { format!("optimizer.lr={args}") } else { args };
        match apply_overrides(&base, &args) {
            Ok(s) => assert!(s.validate("-a").is_ok()),
            Err(e) => check_refusal("-a", &e),
        }
    }
    eprintln!("3000 mutants in {:.2?}: {accepted} accepted, {refused} refused", started.elapsed());
    assert!(refused > 1000, "mutations mostly break specs ({refused} refused)");
}

/// Validates each document against `schema` with Python's `jsonschema` (Draft 2020-12) in one `$RUSH_PYTHON` process:
/// per document, `None` when valid, else the best-matching error.
fn python_schema_verdicts(schema: &Value, docs: &[Value]) -> Vec<Option<String>> {
    let python = std::env::var("RUSH_PYTHON").unwrap_or_else(|_| {
        panic!(
            "RUSH_PYTHON is not set: run scripts/setup.sh, then eval \"$(scripts/setup.sh --env)\" (it names the \
             venv's Python, which has the jsonschema package this test validates with)"
        )
    });
    let dir = tempfile::tempdir().expect("temp dir");
    let (schema_file, docs_file) = (dir.path().join("schema.json"), dir.path().join("docs.json"));
    std::fs::write(&schema_file, schema.to_string()).expect("write schema.json");
    std::fs::write(&docs_file, Value::from(docs.to_vec()).to_string()).expect("write docs.json");
    let script = r#"
import json, sys
from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match
schema = json.load(open(sys.argv[1]))
Draft202012Validator.check_schema(schema)
validator = Draft202012Validator(schema)
verdicts = []
for doc in json.load(open(sys.argv[2])):
    error = best_match(validator.iter_errors(doc))
    verdicts.append(None if error is None else "/".join(map(str, error.absolute_path)) + ": " + error.message[:300])
json.dump(verdicts, sys.stdout)
"#;
    let out = std::process::Command::new(&python)
        .arg("-c")
        .arg(script)
        .arg(&schema_file)
        .arg(&docs_file)
        .output()
        .unwrap_or_else(|e| panic!("running RUSH_PYTHON={python}: {e}"));
    assert!(
        out.status.success(),
        "{python} failed (no jsonschema? run scripts/setup.sh):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let verdicts: Vec<Option<String>> = serde_json::from_slice(&out.stdout).expect("verdicts as JSON");
    assert_eq!(verdicts.len(), docs.len());
    verdicts
}

fn depth(v: &Value) -> usize {
    match v {
        Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        Value::Object(o) => 1 + o.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// The rule beyond the schema that excuses this refusal, if any: the refusal's field is the rule's (at a grid point,
/// `grid.<field>`), or a `random.space` key drawn from a `uniform` or `log_uniform` range.
fn excuse<'a>(refusal: &SpecError, doc: &Value, beyond: &'a [BeyondSchema]) -> Option<&'a BeyondSchema> {
    let SpecError::Invalid { field, .. } = refusal else { return None };
    let field = field.strip_prefix("grid.").unwrap_or(field);
    beyond.iter().find(|b| match b.field.strip_suffix(".*") {
        None => b.field == field,
        Some(space) => field.strip_prefix(&format!("{space}.")).is_some_and(|key| {
            let distribution = &doc["random"]["space"][key];
            distribution.get("uniform").is_some() || distribution.get("log_uniform").is_some()
        }),
    })
}

/// The JSON Schema and validation are one set of rules: every hostile spec that is a YAML mapping goes to JSON and
/// to both; the schema refuses each one rush refuses, except for a rule the schema names as beyond it
/// ([`beyond_schema`], each of which must be met here, so the list is exactly what the schema lets through). Rush
/// judges the JSON text, so refusals of the YAML itself (size, aliases, tags, duplicate keys) that the JSON no longer
/// carries are not counted. Every example spec passes both.
#[test]
fn the_json_schema_refuses_every_hostile_spec_that_validation_refuses() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rush")).args(["spec", "schema"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let schema: Value = serde_json::from_slice(&out.stdout).expect("the schema is JSON");
    let beyond = beyond_schema();

    // Beyond the corpus: one spec per rule beyond the schema that the corpus lacks, and a trailing line break, which
    // a pattern ending in `$` lets through in Python.
    let extra = [
        format!("dataset: emoji\nmemo: {}\n", "é".repeat(2100)),
        "dataset: emoji\nslurm: {time_limit: '99999999999999999999999'}\n".to_string(),
        "dataset: emoji\nrandom: {count: 2, space: {seed: {uniform: [9, 1]}}}\n".to_string(),
        "dataset: emoji\nrandom: {count: 4, space: {image_size: {uniform: [1, 5]}}}\n".to_string(),
        "dataset: emoji\ngrid: {schedule.min_lr: [1]}\n".to_string(),
        "dataset: emoji\nepochs: 2\nschedule: {warmup_epochs: 2}\n".to_string(),
        "dataset: \"emoji\\n\"\n".to_string(),
        "dataset: emoji\nslurm: {partition: \"gpu\\n\"}\n".to_string(),
        "dataset: emoji\nsearcher: {name: asha}\n".to_string(),
        "dataset: emoji\ngrid: {seed: [1, 2]}\nresume: false\nsearcher: {}\n".to_string(),
        "dataset: emoji\ngrid: {seed: [1, 2]}\ncheckpoints: {keep_last: false}\nsearcher: {}\n".to_string(),
    ];
    let corpus = hostile_corpus().into_iter().chain(extra.into_iter().map(|t| ("extra".to_string(), t.into_bytes())));
    let (mut hostile, mut skipped) = (vec![], 0);
    for (kind, bytes) in corpus {
        let doc = std::str::from_utf8(&bytes).ok().and_then(|t| serde_saphyr::from_str::<Value>(t).ok());
        // Not text, not YAML, or nested deeper than Python's JSON reader goes: nothing to give a JSON Schema.
        match doc.filter(|d| d.is_object() && depth(d) < 200) {
            Some(doc) => hostile.push((kind, doc)),
            None => skipped += 1,
        }
    }
    let mut good: Vec<(String, String)> = examples();
    good.extend(spec_doc_yaml_blocks().into_iter().enumerate().map(|(i, b)| {
        let text = if b.contains("dataset:") { b } else { format!("dataset: emoji\n{b}") };
        (format!("docs/spec.md block {i}"), text)
    }));
    let good: Vec<(String, Value)> = good.into_iter().map(|(name, text)| (name, yaml_to_json(&text))).collect();

    let docs: Vec<Value> = hostile.iter().map(|(_, d)| d.clone()).chain(good.iter().map(|(_, d)| d.clone())).collect();
    let verdicts = python_schema_verdicts(&schema, &docs);
    let (hostile_verdicts, good_verdicts) = verdicts.split_at(hostile.len());

    let mut disagree = vec![];
    for ((name, doc), verdict) in good.iter().zip(good_verdicts) {
        if let Some(error) = verdict {
            disagree.push(format!("example {name}: the schema refuses it: {error}"));
        }
        if let Err(e) = Spec::load(name, doc.to_string().as_bytes()) {
            disagree.push(format!("example {name}: rush refuses its JSON: {e}"));
        }
    }
    let (mut refused_by_both, mut accepted, mut excused) = (0, 0, std::collections::BTreeMap::<String, usize>::new());
    for ((kind, doc), verdict) in hostile.iter().zip(hostile_verdicts) {
        let text = doc.to_string();
        let shown: String = text.chars().take(160).collect();
        match (Spec::load("hostile.json", text.as_bytes()), verdict) {
            (Err(_), Some(_)) => refused_by_both += 1,
            (Err(e), None) => match excuse(&e, doc, &beyond) {
                Some(b) => *excused.entry(b.field.clone()).or_default() += 1,
                None => disagree.push(format!("{kind}: the schema accepts {shown}, rush refuses: {e}")),
            },
            // What rush accepts as JSON (the YAML's own faults are gone) the schema may still refuse: rush's YAML
            // reader takes a quoted "3" for a number field, JSON Schema does not.
            (Ok(_), _) => accepted += 1,
        }
    }
    assert!(disagree.is_empty(), "{} disagreements:\n{}", disagree.len(), disagree.join("\n"));
    let unmet: Vec<&str> = beyond.iter().map(|b| b.field.as_str()).filter(|f| !excused.contains_key(*f)).collect();
    assert!(unmet.is_empty(), "rules named beyond the schema that no hostile spec needed: {unmet:?}");
    eprintln!(
        "{} hostile specs as JSON ({skipped} not JSON): {refused_by_both} refused by both, {accepted} accepted by rush \
         as JSON, excused {excused:?}",
        hostile.len()
    );
    assert!(refused_by_both > 300, "only {refused_by_both} hostile specs compared");
}
