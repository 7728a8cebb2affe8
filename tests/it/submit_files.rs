//! Submission files as a real client sees them: Python with numpy loads rush's prediction `.npy` and probability cache,
//! and rush reads what numpy writes.

use std::path::Path;
use std::process::Command;

use rush::core::ensemble::Probs;
use rush::core::session::SessionId;
use rush::home::Home;
use rush::submit::Tta;
use rush::submit::npy;
use rush::submit::probs::{self, CacheKey, CacheSplit};

const N: usize = 1000;
const TAGS: usize = 350;

/// The predicted tag of sticker `i`; the Python side computes the same.
fn tag(i: usize) -> i64 {
    ((i * 173) % TAGS) as i64
}

fn python(script: &str, args: &[&Path]) {
    let python = std::env::var("RUSH_PYTHON")
        .expect("RUSH_PYTHON must name a Python with numpy (scripts/setup.sh --env sets it)");
    let out = Command::new(&python).arg("-c").arg(script).args(args).output().expect("run RUSH_PYTHON");
    assert!(
        out.status.success(),
        "python failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn numpy_loads_the_predictions_and_the_probability_cache() {
    let dir = tempfile::tempdir().unwrap();
    let predictions: Vec<i64> = (0..N).map(tag).collect();
    assert!(predictions.contains(&0) && predictions.contains(&349));
    let predictions_path = dir.path().join("predictions.npy");
    npy::write_i64(&predictions_path, &predictions).unwrap();

    // a cache entry whose argmax is each prediction: 0.5 on the predicted tag, the rest spread
    let mut values = vec![0.5 / (TAGS - 1) as f32; N * TAGS];
    for (i, &p) in predictions.iter().enumerate() {
        values[i * TAGS + p as usize] = 0.5;
    }
    let home = Home::new(dir.path().join("home"));
    let key = CacheKey {
        session: SessionId::new("local", "emoji", 1).unwrap(),
        epoch: 3,
        split: CacheSplit::Test,
        tta: Tta::None,
    };
    let order =
        probs::order_digest((0..N).map(|i| format!("p{}/s{i}", i / 10)).collect::<Vec<_>>().iter().map(String::as_str));
    probs::write(&home, &key, &order, &Probs::new(N, TAGS, values).unwrap()).unwrap();

    let script = r#"
import sys
import numpy as np
pred_path, probs_path = sys.argv[1], sys.argv[2]
a = np.load(pred_path)
assert a.dtype == np.int64, a.dtype
assert a.shape == (1000,), a.shape
assert ((a >= 0) & (a < 350)).all(), (a.min(), a.max())
i = np.arange(1000)
assert (a == (i * 173) % 350).all()
with open(pred_path, "rb") as f:
    assert np.lib.format.read_magic(f) == (1, 0)
    np.lib.format.read_array_header_1_0(f)
    assert f.tell() % 64 == 0, f.tell()
p = np.load(probs_path)
assert p.dtype == np.float16, p.dtype
assert p.shape == (1000, 350), p.shape
assert p.flags.c_contiguous
assert (p.argmax(axis=1) == a).all()
assert abs(float(p[0].astype(np.float32).sum()) - 1.0) < 0.01
"#;
    python(script, &[&predictions_path, &key.probs_path(&home)]);
}

#[test]
fn rush_reads_what_numpy_writes() {
    let dir = tempfile::tempdir().unwrap();
    let (ints, halves) = (dir.path().join("ints.npy"), dir.path().join("halves.npy"));
    let script = r#"
import sys
import numpy as np
i = np.arange(1000)
np.save(sys.argv[1], ((i * 173) % 350).astype(np.int64))
m = (np.arange(1000 * 350) % 1024 / 1024).astype(np.float16).reshape(1000, 350)
np.save(sys.argv[2], m)
"#;
    python(script, &[&ints, &halves]);
    assert_eq!(npy::read_i64(&ints).unwrap(), (0..N).map(tag).collect::<Vec<_>>());
    let (rows, columns, values) = npy::read_f16_matrix(&halves).unwrap();
    assert_eq!((rows, columns), (N, TAGS));
    assert!(values.iter().enumerate().all(|(i, &v)| v == (i % 1024) as f32 / 1024.0));
    // numpy's int64 file is no float16 matrix, and the other way round
    assert!(npy::read_f16_matrix(&ints).is_err());
    assert!(npy::read_i64(&halves).is_err());
}
