"""Self-test of src/code/nsml.py, run as the rush supervisor runs user code: `python src/code/test_nsml.py` exits 0
when every check passes. Needs numpy (for test mode); nothing else beyond the standard library."""

import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap

HERE = os.path.dirname(os.path.abspath(__file__))

# The user's code: its own parser declares NSML's reserved flags, like AI RUSH's main.py.
SCRIPT = textwrap.dedent('''
    import argparse, json, os, sys
    import nsml

    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--mode", type=str, default="train")
    parser.add_argument("--iteration", type=str, default="0")
    parser.add_argument("--pause", type=int, default=0)
    args = parser.parse_args()
    state = {"weights": "w0"}
    log = os.environ["T_LOG"]

    def note(*what):
        with open(log, "a") as f:
            f.write(json.dumps(list(what)) + "\\n")

    def save(d):
        with open(os.path.join(d, "model.txt"), "w") as f:
            f.write(state["weights"] * 100)
        os.mkdir(os.path.join(d, "sub"))
        with open(os.path.join(d, "sub", "extra.bin"), "wb") as f:
            f.write(b"x" * 10)
        note("save", d)

    def load(d):
        with open(os.path.join(d, "model.txt")) as f:
            state["weights"] = f.read()[:2]
        note("load", d, state["weights"])

    def infer(images, meta):
        import numpy as np
        with open(meta) as f:
            n = sum(1 for _ in f) - 1
        note("infer", images, meta, n)
        kind = os.environ.get("T_INFER", "probs")
        if kind == "probs":
            return np.full((n, 350), 1.0 / 350)          # float64: nsml casts to float32
        if kind == "preds":
            return [i % 350 for i in range(n)]            # a list: through numpy.asarray
        if kind == "wrong":
            return np.zeros((10, 7))
        if kind == "wrong-valid":
            is_test = os.path.basename(os.path.dirname(meta)) == "test"
            return np.zeros((n, 350)) if is_test else np.zeros(n, dtype=np.float32)
        raise SystemExit("bad T_INFER")

    nsml.bind(save=save, load=load, infer=infer)
    if args.pause:
        nsml.paused(scope=locals())
    assert nsml.paused(scope=locals()) is None        # train mode: returns
    assert nsml.IS_ON_NSML is True and nsml.GPU_NUM == 0 and nsml.HAS_DATASET is True
    assert nsml.DATASET_NAME == "tiny" and nsml.SESSION_NAME == "me/tiny/7"

    try:
        nsml.load(1, session="other/tiny/1")
        raise AssertionError("load(session=...) did not raise")
    except RuntimeError as e:  # the self-test plays no supervisor that answers (RUSH_REPLY_FD unset)
        assert "only inside a rush session" in str(e), e
    try:
        nsml.save("bad/name")
        raise AssertionError("save('bad/name') did not raise")
    except ValueError as e:
        assert "bad/name" in str(e)

    nsml.report(summary=True, step=None, scope=locals(), train__Loss=0.5, epoch_total=args.epochs)
    for epoch in range(1, args.epochs + 1):
        state["weights"] = "w%d" % epoch
        nsml.report(summary=True, step=epoch, epoch_total=args.epochs, train__Loss=1.0 / epoch,
                    valid__Accuracy=0.25 * epoch, flag=True, note="text", bad=float("nan"), inf=float("inf"))
        nsml.save(epoch if epoch == 1 else str(epoch))
    nsml.save("best")
    nsml.load(1)
    assert state["weights"] == "w1", state
    print("script done", file=sys.stderr)
''')


def run(tmp, session, argv, extra_env=None, events=True):
    """Runs SCRIPT like the supervisor: returns (rc, event dicts or None, stderr)."""
    env = dict(os.environ)
    for k in list(env):
        if k.startswith(("RUSH_", "NSML_")):
            del env[k]
    env.update({
        "PYTHONPATH": os.path.join(tmp, "pkg"),
        "NSML_DATASET_PATH": os.path.join(tmp, "dataset"),
        "NSML_DATASET_NAME": "tiny",
        "NSML_SESSION": "me/tiny/7",
        "RUSH_SESSION_DIR": session,
        "RUSH_GPU_NUM": "0",
        "T_LOG": os.path.join(session, "log.jsonl"),
    })
    env.update(extra_env or {})
    cmd = [sys.executable, os.path.join(tmp, "main.py")] + argv
    if not events:
        p = subprocess.run(cmd, env=env, cwd=session, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)
        return p.returncode, None, p.stderr.decode()
    r, w = os.pipe()
    env["RUSH_EVENTS_FD"] = str(w)
    with tempfile.TemporaryFile() as err:
        p = subprocess.Popen(cmd, env=env, cwd=session, pass_fds=(w,), stdout=subprocess.DEVNULL, stderr=err)
        os.close(w)
        chunks = []
        with os.fdopen(r, "rb") as f:
            while True:
                b = f.read(65536)
                if not b:
                    break
                chunks.append(b)
        rc = p.wait(timeout=120)
        err.seek(0)
        stderr = err.read().decode()
    data = b"".join(chunks).decode()
    assert data == "" or data.endswith("\n"), data
    lines = data.splitlines()
    for line in lines:
        assert len(line.encode()) < 64 * 1024
    return rc, [json.loads(line) for line in lines], stderr


def log_entries(session):
    path = os.path.join(session, "log.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        entries = [json.loads(line) for line in f]
    os.remove(path)
    return entries


def write_split(tmp, name, rows):
    images = os.path.join(tmp, name, "images")
    os.makedirs(images)
    meta = os.path.join(tmp, name, "meta.csv")
    with open(meta, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["index", "package_id", "sticker_id"])
        for i in range(rows):
            w.writerow([i, i // 10, i])
    return images, meta


def check_event_common(ev, event):
    assert ev["v"] == 1, ev
    assert ev["event"] == event, ev
    assert isinstance(ev["t"], float) and ev["t"] > 1e9, ev


def test_train(tmp):
    session = os.path.join(tmp, "s-train")
    os.makedirs(session)
    rc, events, stderr = run(tmp, session, ["--epochs", "2"])
    assert rc == 0, stderr
    assert "script done" in stderr, stderr
    kinds = [e["event"] for e in events]
    assert kinds == ["report", "report", "checkpoint", "report", "checkpoint", "checkpoint"], kinds
    for e in events:
        check_event_common(e, e["event"])

    r0, r1, c1, r2, c2, cb = events
    assert set(r0) == {"v", "t", "event", "step", "summary", "metrics"}, r0
    assert r0["step"] == 0 and r0["summary"] is True, r0
    assert r0["metrics"] == {"train__Loss": 0.5, "epoch_total": 2}, r0
    assert r1["step"] == 1 and r1["metrics"] == {"epoch_total": 2, "train__Loss": 1.0, "valid__Accuracy": 0.25}, r1
    assert r2["step"] == 2 and r2["metrics"] == {"epoch_total": 2, "train__Loss": 0.5, "valid__Accuracy": 0.5}, r2
    assert isinstance(r1["metrics"]["epoch_total"], int)

    expected_bytes = len("w1") * 100 + 10
    for ev, name, epoch, val_acc in [(c1, "1", 1, 0.25), (c2, "2", 2, 0.5), (cb, "best", 3, 0.5)]:
        assert set(ev) == {"v", "t", "event", "name", "path", "epoch", "val_acc", "bytes"}, ev
        assert ev["name"] == name and ev["path"] == "checkpoints/" + name, ev
        assert ev["epoch"] == epoch and ev["val_acc"] == val_acc, ev
        assert ev["bytes"] == expected_bytes and ev["bytes"] > 0, ev
        d = os.path.join(session, "checkpoints", name)
        assert os.path.isfile(os.path.join(d, "model.txt")), d
        assert os.path.isfile(os.path.join(d, "sub", "extra.bin")), d
    assert sorted(os.listdir(os.path.join(session, "checkpoints"))) == ["1", "2", "best"], \
        os.listdir(os.path.join(session, "checkpoints"))
    with open(os.path.join(session, "checkpoints", "2", "model.txt")) as f:
        assert f.read() == "w2" * 100
    log = log_entries(session)
    saves = [e[1] for e in log if e[0] == "save"]
    assert [os.path.basename(s) for s in saves] == [".tmp-1-%s" % saves[0].rsplit("-", 1)[1],
                                                    ".tmp-2-%s" % saves[0].rsplit("-", 1)[1],
                                                    ".tmp-best-%s" % saves[0].rsplit("-", 1)[1]], saves
    assert all(os.path.dirname(s) == os.path.join(session, "checkpoints") for s in saves), saves
    assert [e for e in log if e[0] == "load"] == [["load", os.path.join(session, "checkpoints", "1"), "w1"]], log

    # Saving again over existing checkpoints replaces them; RUSH_BEST_METRIC picks the metric.
    rc, events, stderr = run(tmp, session, ["--epochs", "2"], {"RUSH_BEST_METRIC": "train__Loss"})
    assert rc == 0, stderr
    cks = [e for e in events if e["event"] == "checkpoint"]
    assert [(e["name"], e["epoch"], e["val_acc"]) for e in cks] == [("1", 1, 1.0), ("2", 2, 0.5), ("best", 3, 0.5)], cks
    assert sorted(os.listdir(os.path.join(session, "checkpoints"))) == ["1", "2", "best"]
    log_entries(session)
    return session


def test_fork(tmp, source_session):
    session = os.path.join(tmp, "s-fork")
    os.makedirs(session)
    init = os.path.join(source_session, "checkpoints", "2")
    rc, events, stderr = run(tmp, session, ["--epochs", "1"], {"RUSH_INIT_CHECKPOINT": init})
    assert rc == 0, stderr
    assert "RUSH_INIT_CHECKPOINT" in stderr, stderr
    log = log_entries(session)
    assert log[0] == ["load", init, "w2"], log
    assert [e["name"] for e in events if e["event"] == "checkpoint"] == ["1", "best"], events


def test_infer(tmp, session):
    import numpy as np

    test_images, test_meta = write_split(tmp, "test", 200)
    valid_images, valid_meta = write_split(tmp, "valid", 30)
    argv = ["--mode", "test", "--iteration", "2", "--pause", "1"]

    def infer_env(out, kind, valid=True):
        if os.path.exists(out):
            shutil.rmtree(out)
        os.makedirs(out)
        env = {"RUSH_INFER_OUT": out, "RUSH_TEST_IMAGES": test_images, "RUSH_TEST_META": test_meta, "T_INFER": kind}
        if valid:
            env.update({"RUSH_VALID_IMAGES": valid_images, "RUSH_VALID_META": valid_meta})
        return env

    # probabilities, with a validation split
    out = os.path.join(tmp, "out")
    rc, events, stderr = run(tmp, session, argv, infer_env(out, "probs"))
    assert rc == 0, stderr
    assert events == [], events
    assert "script done" not in stderr, stderr  # paused exited
    log = log_entries(session)
    assert log[0] == ["load", os.path.join(session, "checkpoints", "2"), "w2"], log
    assert log[1] == ["infer", test_images, test_meta, 200], log
    assert log[2] == ["infer", valid_images, valid_meta, 30], log
    t = np.load(os.path.join(out, "test.raw.npy"))
    v = np.load(os.path.join(out, "valid.raw.npy"))
    assert t.shape == (200, 350) and t.dtype == np.float32, (t.shape, t.dtype)
    assert v.shape == (30, 350) and v.dtype == np.float32, (v.shape, v.dtype)
    with open(os.path.join(out, "code-infer.json")) as f:
        assert json.load(f) == {"kind": "probabilities", "test_rows": 200, "valid_rows": 30}
    assert sorted(os.listdir(out)) == ["code-infer.json", "test.raw.npy", "valid.raw.npy"], os.listdir(out)

    # predictions as a list, dry run (no validation split)
    rc, events, stderr = run(tmp, session, argv, infer_env(out, "preds", valid=False))
    assert rc == 0, stderr
    t = np.load(os.path.join(out, "test.raw.npy"))
    assert t.shape == (200,) and t.dtype.kind == "i" and t[7] == 7, (t.shape, t.dtype)
    with open(os.path.join(out, "code-infer.json")) as f:
        assert json.load(f) == {"kind": "predictions", "test_rows": 200}
    assert sorted(os.listdir(out)) == ["code-infer.json", "test.raw.npy"], os.listdir(out)
    log_entries(session)

    # wrong shape: exit 3 with the exact message, no code-infer.json
    rc, events, stderr = run(tmp, session, argv, infer_env(out, "wrong"))
    assert rc == 3, (rc, stderr)
    msg = ("nsml.paused: infer returned shape (10, 7) dtype float64 for 200 test images; expected a 1-D integer "
           "array of 200 predictions or a (200, 350) float array of probabilities")
    assert msg in stderr, stderr
    assert not os.path.exists(os.path.join(out, "code-infer.json"))

    # right for test, wrong for validation
    rc, events, stderr = run(tmp, session, argv, infer_env(out, "wrong-valid"))
    assert rc == 3, (rc, stderr)
    msg = ("nsml.paused: infer returned shape (30,) dtype float32 for 30 validation images; expected a 1-D integer "
           "array of 30 predictions or a (30, 350) float array of probabilities")
    assert msg in stderr, stderr
    assert not os.path.exists(os.path.join(out, "code-infer.json"))
    log_entries(session)


def test_without_events_fd(tmp):
    session = os.path.join(tmp, "s-by-hand")
    os.makedirs(session)
    rc, events, stderr = run(tmp, session, ["--epochs", "1"], events=False)
    assert rc == 0, stderr
    lines = [line for line in stderr.splitlines() if line.startswith("[nsml] {")]
    parsed = [json.loads(line[len("[nsml] "):]) for line in lines]
    assert [e["event"] for e in parsed] == ["report", "report", "checkpoint", "checkpoint"], stderr
    assert os.path.isdir(os.path.join(session, "checkpoints", "1"))
    # a bad fd number falls back to stderr too
    rc, events, stderr = run(tmp, session, ["--epochs", "1"], {"RUSH_EVENTS_FD": "notanumber"}, events=False)
    assert rc == 0, stderr
    assert stderr.count("[nsml] {") == 4, stderr


def test_in_process(tmp):
    """Direct calls: save without bind, and names."""
    sys.path.insert(0, os.path.join(tmp, "pkg"))
    os.environ.pop("RUSH_EVENTS_FD", None)
    import nsml
    try:
        nsml.save(1)
        raise AssertionError("save without bind did not raise")
    except RuntimeError as e:
        assert str(e) == "nsml.save: bind(save=...) first", e
    for bad in ["", ".hidden", "a/b", "x" * 65, "-1", "é"]:
        try:
            nsml._checkpoint_name(bad)
            raise AssertionError("accepted %r" % bad)
        except ValueError:
            pass
    for good in ["1", "best", "epoch_3.5-a", "x" * 64]:
        assert nsml._checkpoint_name(good) == good
    assert nsml._metric_value(True) is None and nsml._metric_value("1") is None
    assert nsml._metric_value(float("nan")) is None and nsml._metric_value(3) == 3
    import numpy as np
    assert nsml._metric_value(np.float32(0.5)) == 0.5 and nsml._metric_value(np.int64(4)) == 4
    assert nsml._metric_value(np.bool_(True)) is None and nsml._metric_value(np.zeros(3)) is None


def main():
    tmp = tempfile.mkdtemp(prefix="nsml-test-")
    try:
        os.makedirs(os.path.join(tmp, "pkg", "nsml"))
        shutil.copy(os.path.join(HERE, "nsml.py"), os.path.join(tmp, "pkg", "nsml", "__init__.py"))
        os.makedirs(os.path.join(tmp, "dataset"))
        with open(os.path.join(tmp, "main.py"), "w") as f:
            f.write(SCRIPT)
        session = test_train(tmp)
        test_fork(tmp, session)
        test_infer(tmp, session)
        test_without_events_fd(tmp)
        test_in_process(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("test_nsml: all checks passed")


if __name__ == "__main__":
    main()
