"""A code session for the tests: trains nothing, but reports, saves, loads, infers and looks around as told."""
import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

import nsml

parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int, default=2)
parser.add_argument("--sleep", type=float, default=0.0)
parser.add_argument("--grandchild", action="store_true")
parser.add_argument("--look", default="", help="host paths that must not be visible, comma-separated")
parser.add_argument("--infer", default="good", choices=["good", "bad"])
parser.add_argument("--no-valid", action="store_true", help="report training metrics only, as AI RUSH's baseline")
parser.add_argument("--load-from", default="", help="SESSION:CHECKPOINT,... to load through nsml.load(session=...)")
parser.add_argument("--mode", default="train")
parser.add_argument("--iteration", default="0")
parser.add_argument("--pause", type=int, default=0)
args = parser.parse_args()

state = {"loaded": None}


def save(dir_name):
    with open(os.path.join(dir_name, "state.json"), "w") as f:
        json.dump({"saved": True}, f)


def load(dir_name):
    state["loaded"] = dir_name
    print(f"probe: loaded {dir_name}", flush=True)


def infer(image_dir, meta_csv):
    with open(meta_csv) as f:
        n = sum(1 for line in f if line.strip()) - 1
    if args.infer == "bad":
        return np.zeros((n, 7))
    return np.arange(n) % 8


nsml.bind(save=save, load=load, infer=infer)
if args.pause:
    nsml.paused(scope=locals())


def visible():
    """What of the daemon's home this process can reach: by path, and by walking from / and from `..`."""
    found = [p for p in args.look.split(",") if p and os.path.exists(p)]
    for top in ["/", os.path.abspath("..")]:
        for root, dirs, files in os.walk(top):
            dirs[:] = [d for d in dirs if os.path.join(root, d) not in ("/proc", "/sys", "/dev", "/usr")]
            for name in files + dirs:
                if name in ("rush.db", "test_labels.csv", "users.yaml", "daemon.addr"):
                    found.append(os.path.join(root, name))
    return sorted(set(found))


def tamper():
    """Tries what a hostile script would: edit the files rush trusts, and pass off a link as a checkpoint."""
    session = os.environ["RUSH_SESSION_DIR"]
    done = []
    for name in ("spec.yaml", "events.jsonl"):
        try:
            with open(os.path.join(session, name), "a") as f:
                f.write("runtime: {sandbox: false}\n")
            done.append(name)
        except OSError:
            pass
    os.makedirs(os.path.join(session, "checkpoints"), exist_ok=True)
    os.symlink("/", os.path.join(session, "checkpoints", "77"))
    line = '{"v":1,"t":1,"event":"checkpoint","name":"77","path":"/","epoch":77,"val_acc":1,"bytes":1}\n'
    os.write(int(os.environ["RUSH_EVENTS_FD"]), line.encode())
    return done


for item in filter(None, args.load_from.split(",")):
    other, checkpoint = item.rsplit(":", 1)
    try:
        nsml.load(checkpoint, session=other)
    except RuntimeError as e:
        print(f"probe: load {item} failed: {e}", flush=True)

if args.look:
    with open(os.path.join(os.environ["RUSH_SESSION_DIR"], "visible.json"), "w") as f:
        json.dump({"visible": visible(), "tampered": tamper()}, f)

if args.grandchild:
    # A grandchild in a session of its own (out of the process group), the hardest to stop.
    subprocess.Popen(["sleep", "313.25"], start_new_session=True)

for epoch in range(1, args.epochs + 1):
    time.sleep(args.sleep)
    if args.no_valid:
        nsml.report(summary=True, step=epoch, train__Loss=1.0 / epoch)
    else:
        nsml.report(summary=True, step=epoch, train__Loss=1.0 / epoch, valid__Accuracy=epoch / 100.0)
    nsml.save(epoch)
print(f"probe: done, loaded={state['loaded']}", flush=True)
