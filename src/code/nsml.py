"""rush's `nsml` module: the subset of NSML's Python API that AI RUSH 2019 code uses (bind, report, save, load, paused),
talking to the rush supervisor through JSON event lines on the file descriptor in RUSH_EVENTS_FD.

The rush daemon writes this file as `nsml/__init__.py` on the PYTHONPATH of `python main.py ...` (src/code/nsml.py,
embedded with include_str!). Standard library only; numpy is imported inside the functions that handle arrays.
Without RUSH_EVENTS_FD (main.py run by hand) events go to stderr as `[nsml] {...}` lines and nothing fails.
"""

import argparse
import csv
import json
import math
import numbers
import os
import re
import shutil
import sys
import threading
import time

__all__ = [
    "DATASET_PATH", "DATASET_NAME", "IS_ON_NSML", "GPU_NUM", "HAS_DATASET", "SESSION_NAME",
    "bind", "report", "save", "load", "paused",
]

EVENT_SCHEMA_VERSION = 1
NUM_CLASSES = 350
MAX_EVENT_LINE = 64 * 1024  # bytes, newline included; the supervisor's line limit

DATASET_PATH = os.environ.get("NSML_DATASET_PATH", "")
DATASET_NAME = os.environ.get("NSML_DATASET_NAME", "")
SESSION_NAME = os.environ.get("NSML_SESSION", "")
IS_ON_NSML = True
try:
    GPU_NUM = int(os.environ.get("RUSH_GPU_NUM", "0") or "0")
except ValueError:
    GPU_NUM = 0
HAS_DATASET = bool(DATASET_PATH) and os.path.exists(DATASET_PATH)

_CHECKPOINT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_EPOCH_NAME = re.compile(r"^[1-9][0-9]{0,9}$")
_U32_MAX = 2 ** 32 - 1

_lock = threading.Lock()
_bound = {"save": None, "load": None, "infer": None}
_state = {
    "events_fd": None,        # int, or None for stderr
    "events_fd_read": False,  # RUSH_EVENTS_FD parsed yet
    "best_metric": os.environ.get("RUSH_BEST_METRIC") or None,
    "best_value": None,       # latest reported value of the best metric
    "saved": 0,               # checkpoints saved by this process
    "init_loaded": False,     # RUSH_INIT_CHECKPOINT loaded
}


def _warn(msg):
    try:
        sys.stderr.write("[nsml] %s\n" % msg)
        sys.stderr.flush()
    except Exception:
        pass


def _events_fd():
    if not _state["events_fd_read"]:
        _state["events_fd_read"] = True
        raw = os.environ.get("RUSH_EVENTS_FD")
        if raw is not None and raw != "":
            try:
                fd = int(raw)
                if fd < 0:
                    raise ValueError(raw)
                _state["events_fd"] = fd
            except ValueError:
                _warn("RUSH_EVENTS_FD=%r is not a file descriptor number; events go to stderr" % raw)
    return _state["events_fd"]


def _emit(event, fields):
    """Writes one event line: to RUSH_EVENTS_FD when set, else to stderr prefixed `[nsml] `."""
    obj = {"v": EVENT_SCHEMA_VERSION, "t": time.time(), "event": event}
    obj.update(fields)
    line = json.dumps(obj, separators=(",", ":"), allow_nan=False, ensure_ascii=True) + "\n"
    data = line.encode("utf-8")
    if len(data) > MAX_EVENT_LINE:
        _warn("%s event dropped: %d bytes, over the %d-byte line limit" % (event, len(data), MAX_EVENT_LINE))
        return
    with _lock:
        fd = _events_fd()
        if fd is not None:
            try:
                view = memoryview(data)
                while view:
                    n = os.write(fd, view)
                    view = view[n:]
                return
            except OSError as e:
                _warn("cannot write to RUSH_EVENTS_FD=%d (%s); events go to stderr from now on" % (fd, e))
                _state["events_fd"] = None
        _warn(line.rstrip("\n"))


def _session_dir():
    d = os.environ.get("RUSH_SESSION_DIR")
    if not d:
        d = os.getcwd()
        if not _state.get("warned_session_dir"):
            _state["warned_session_dir"] = True
            _warn("RUSH_SESSION_DIR is not set; checkpoints go under %s" % os.path.join(d, "checkpoints"))
    return d


def _checkpoint_name(checkpoint):
    name = str(checkpoint)
    if not _CHECKPOINT_NAME.match(name):
        raise ValueError("nsml: invalid checkpoint name %r: expected 1 to 64 of A-Z a-z 0-9 . _ - "
                         "starting with a letter or digit" % name)
    return name


def _argv_flags(argv=None):
    """NSML's reserved flags, read from sys.argv whatever else the user's parser declares."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--mode", type=str, default="train")
    parser.add_argument("--iteration", type=str, default="0")
    parser.add_argument("--pause", type=int, default=0)
    args, _ = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    return args


def _metric_value(v):
    """A finite int/float from a metric value, or None to skip it. numpy scalars and one-element arrays/tensors
    count as numbers (through .item())."""
    if isinstance(v, bool):
        return None
    if not isinstance(v, numbers.Real):
        item = getattr(v, "item", None)
        if not callable(item):
            return None
        try:
            v = item()  # raises for arrays/tensors of more than one element
        except Exception:
            return None
        if isinstance(v, bool) or not isinstance(v, numbers.Real):
            return None
    if isinstance(v, numbers.Integral):
        v = int(v)
        return v if abs(v) < 2 ** 53 else float(v)
    try:
        f = float(v)
    except (TypeError, ValueError, OverflowError):
        return None
    return f if math.isfinite(f) else None


def bind(save=None, load=None, infer=None, **kwargs):
    """Remembers the user's save(dir), load(dir) and infer(images_dir, meta_csv). With RUSH_INIT_CHECKPOINT set (a
    fork) in train mode, loads that checkpoint folder through `load` right away."""
    _bound["save"] = save
    _bound["load"] = load
    _bound["infer"] = infer
    init = os.environ.get("RUSH_INIT_CHECKPOINT")
    if init and load is not None and not _state["init_loaded"] and _argv_flags().mode == "train":
        _state["init_loaded"] = True
        _warn("loading the initial checkpoint %s (RUSH_INIT_CHECKPOINT)" % init)
        load(init)


def report(summary=False, scope=None, step=None, **metrics):
    """Reports metrics for a step: one `report` event. Non-numbers, NaN and infinities are skipped silently."""
    try:
        step = 0 if step is None else int(step)
    except (TypeError, ValueError):
        step = 0
    step = max(step, 0)
    clean = {}
    for k, v in metrics.items():
        value = _metric_value(v)
        if value is None:
            continue
        clean[str(k)] = value
    best = _state["best_metric"]
    if best is None:
        for k in clean:
            low = k.lower()
            if "val" in low and "acc" in low:
                _state["best_metric"] = best = k
                break
    if best is not None and best in clean:
        _state["best_value"] = float(clean[best])
    _emit("report", {"step": step, "summary": bool(summary), "metrics": clean})


def _tree_bytes(path):
    total = 0
    for root, dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_size
            except OSError:
                pass
    return total


def _fsync_tree(path):
    for root, dirs, files in os.walk(path):
        for f in files:
            p = os.path.join(root, f)
            if not os.path.islink(p):
                _fsync_dir(p)


def _fsync_dir(path):
    """fsync a folder or a file, best effort."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save(checkpoint, **kwargs):
    """Saves checkpoint `checkpoint` (NSML: the epoch) through the bound save into
    $RUSH_SESSION_DIR/checkpoints/<name>/, atomically, then emits a `checkpoint` event."""
    if _bound["save"] is None:
        raise RuntimeError("nsml.save: bind(save=...) first")
    name = _checkpoint_name(checkpoint)
    session_dir = _session_dir()
    ckpt_root = os.path.join(session_dir, "checkpoints")
    os.makedirs(ckpt_root, exist_ok=True)
    tmp = os.path.join(ckpt_root, ".tmp-%s-%d" % (name, os.getpid()))
    if os.path.lexists(tmp):
        shutil.rmtree(tmp)
    os.mkdir(tmp)
    try:
        _bound["save"](tmp)
        _fsync_tree(tmp)
        final = os.path.join(ckpt_root, name)
        if os.path.lexists(final):
            shutil.rmtree(final)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_dir(ckpt_root)
    if _EPOCH_NAME.match(name) and int(name) <= _U32_MAX:
        epoch = int(name)
    else:
        epoch = _state["saved"] + 1
    _state["saved"] += 1
    val_acc = _state["best_value"]
    _emit("checkpoint", {
        "name": name,
        "path": "checkpoints/" + name,
        "epoch": epoch,
        "val_acc": 0.0 if val_acc is None else val_acc,
        "bytes": _tree_bytes(final),
    })


def _request(obj):
    """Asks rush (the process that started this one) something: a JSON line on the events fd, the answer one JSON line
    on RUSH_REPLY_FD."""
    fd, reply = _events_fd(), os.environ.get("RUSH_REPLY_FD")
    if fd is None or not reply:
        raise RuntimeError("nsml.load(session=...) works only inside a rush session (RUSH_EVENTS_FD, RUSH_REPLY_FD)")
    data = (json.dumps(obj, separators=(",", ":")) + "\n").encode("utf-8")
    with _lock:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = os.read(int(reply), 65536)
            if not chunk:
                raise RuntimeError("nsml: rush did not answer")
            buf += chunk
    return json.loads(buf.decode("utf-8"))


def load(checkpoint, session=None, **kwargs):
    """Loads checkpoint `checkpoint` of this session, or of another of the user's sessions (`session`:
    `user/dataset/n`, `dataset/n` or `n`), through the bound load. Another session's checkpoint is copied in by rush
    first: the sandbox shows no other session."""
    if _bound["load"] is None:
        raise RuntimeError("nsml.load: bind(load=...) first")
    if session is not None:
        answer = _request({"request": "load", "session": str(session), "checkpoint": str(checkpoint)})
        if not answer.get("ok"):
            raise RuntimeError("nsml.load(%r, session=%r): %s" % (checkpoint, session, answer.get("error")))
        _bound["load"](answer["path"])
        return
    name = _checkpoint_name(checkpoint)
    path = os.path.join(_session_dir(), "checkpoints", name)
    if not os.path.isdir(path):
        raise FileNotFoundError("nsml.load: no checkpoint %r (%s does not exist)" % (name, path))
    _bound["load"](path)


def _csv_rows(path):
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        next(reader, None)  # header
        return sum(1 for row in reader if any(cell.strip() for cell in row))


def _check_output(out, n, what):
    """(kind, array) from infer's result for `n` rows, or exit 3 saying what was wrong."""
    import numpy as np

    if all(callable(getattr(out, a, None)) for a in ("detach", "cpu", "numpy")):
        out = out.detach().cpu().numpy()
    try:
        arr = np.asarray(out)
    except Exception as e:  # ragged lists and the like
        _fail(3, "nsml.paused: infer returned %s that is not an array (%s) for %d %s; expected a 1-D integer array of "
                 "%d predictions or a (%d, %d) float array of probabilities"
              % (type(out).__name__, e, n, what, n, n, NUM_CLASSES))
    if arr.ndim == 1 and arr.shape[0] == n and arr.dtype.kind in "iu":
        return "predictions", arr.astype(np.int64, copy=False)
    if arr.ndim == 2 and arr.shape == (n, NUM_CLASSES) and arr.dtype.kind == "f":
        return "probabilities", arr.astype(np.float32, copy=False)
    _fail(3, "nsml.paused: infer returned shape %s dtype %s for %d %s; expected a 1-D integer array of %d predictions "
             "or a (%d, %d) float array of probabilities" % (tuple(arr.shape), arr.dtype, n, what, n, n, NUM_CLASSES))


def _fail(status, msg):
    try:
        sys.stderr.write(msg + "\n")
        sys.stderr.flush()
    except Exception:
        pass
    sys.exit(status)


def _required_env(name):
    v = os.environ.get(name)
    if not v:
        raise RuntimeError("nsml.paused: --mode test needs %s (set by rush for a submission)" % name)
    return v


def _infer_split(images, meta, what, out_path):
    import numpy as np

    n = _csv_rows(meta)
    result = _bound["infer"](images, meta)
    kind, arr = _check_output(result, n, what)
    np.save(out_path, arr)
    return kind, n


def paused(scope=None, **kwargs):
    """NSML's entry point for submissions. In train mode returns None. In test mode (`--mode test --iteration N
    --pause 1`) loads checkpoint N, runs infer on the test split (and the validation split when given), writes
    $RUSH_INFER_OUT/{test,valid}.raw.npy and code-infer.json, and exits with status 0."""
    flags = _argv_flags()
    if flags.mode != "test":
        return None
    if _bound["infer"] is None:
        raise RuntimeError("nsml.paused: bind(infer=...) first")
    out_dir = _required_env("RUSH_INFER_OUT")
    test_images = _required_env("RUSH_TEST_IMAGES")
    test_meta = _required_env("RUSH_TEST_META")
    load(flags.iteration)
    kind, test_rows = _infer_split(test_images, test_meta, "test images", os.path.join(out_dir, "test.raw.npy"))
    summary = {"kind": kind, "test_rows": test_rows}
    valid_meta = os.environ.get("RUSH_VALID_META")
    if valid_meta:
        valid_images = _required_env("RUSH_VALID_IMAGES")
        vkind, valid_rows = _infer_split(valid_images, valid_meta, "validation images",
                                         os.path.join(out_dir, "valid.raw.npy"))
        if vkind != kind:
            _fail(3, "nsml.paused: infer returned %s for the test images but %s for the validation images; "
                     "return the same kind for both" % (kind, vkind))
        summary["valid_rows"] = valid_rows
    tmp = os.path.join(out_dir, ".code-infer.json.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(summary, f)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, os.path.join(out_dir, "code-infer.json"))
    _fsync_dir(out_dir)
    _warn("inference done: %s, %d test rows%s" % (
        kind, test_rows, ", %d validation rows" % summary["valid_rows"] if "valid_rows" in summary else ""))
    sys.exit(0)
