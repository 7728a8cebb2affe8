"""The PyTorch twin of `rush bench recipe`: the built-in trainer's recipe written the way a PyTorch user would, with
torchvision's model, trained on the same emoji data (an AI RUSH layout folder built at the training size).

- data: `train_with_valid_tags.csv` in file order, the label is the first tag; the packages `packages.tsv` marks
  `valid` are the validation split (fxemoji), the rest train; the test split (twemoji) is scored once at the end
  against `test/test_labels.csv`. PNGs are RGBA composited on white, as rush decodes them.
- model: `torchvision.models.<model>(num_classes=350)` (torchvision's init: Kaiming-normal convolutions with fan_out,
  batch-norm scales at 1), or bench/torch_train_step.py's layout where torchvision is missing.
- epoch: a seeded permutation in full batches (the last partial batch dropped, as rush does); per image, a flip, a
  random resized crop window (scale, aspect 3/4..4/3, ten tries) applied with an affine grid (bilinear, borders
  clamped) on float tensors, then brightness, contrast and saturation factors in [1 - j, 1 + j], each clamped to
  [0, 1] as torchvision's functional ops do; normalised by the training split's per-channel mean and std.
- optimisation: AdamW (lr, weight decay), rush's schedule (linear warm-up of one epoch, then cosine to 0, per step),
  cross-entropy with label smoothing, fp32.

Prints one JSON line per epoch (epoch, train_loss, train_acc, val_loss, val_acc, seconds) and a last one with
test_acc. Usage: python bench/torch_recipe.py --data DIR [--epochs 15] [--size 32] [--batch 128] [--seed 0]
"""
import argparse
import csv
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

NUM_TAGS = 350


def model_of(name):
    """torchvision's model of that name; rush's baseline_cnn (and the ResNets where torchvision is missing) from
    bench/torch_train_step.py, with PyTorch's default init."""
    if name != "baseline_cnn":
        try:
            import torchvision

            return getattr(torchvision.models, name)(num_classes=NUM_TAGS)
        except ImportError:
            pass
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from torch_train_step import MODELS

    return MODELS[name]()


def load_rgb(path, size):
    img = Image.open(path).convert("RGBA")
    if img.size != (size, size):
        img = img.resize((size, size), Image.BILINEAR)
    white = Image.new("RGBA", img.size, (255, 255, 255, 255))
    return np.asarray(Image.alpha_composite(white, img).convert("RGB"), dtype=np.uint8)


def first_tag(tags):
    return int(tags.split(",")[0])


def read_data(root, size):
    train_dir = os.path.join(root, "train", "train_data")
    with open(os.path.join(train_dir, "packages.tsv")) as f:
        valid = {r["package_id"] for r in csv.DictReader(f, delimiter="\t") if r.get("split") == "valid"}
    splits = {"train": ([], []), "valid": ([], [])}
    with open(os.path.join(train_dir, "train_with_valid_tags.csv")) as f:
        for r in csv.DictReader(f):
            path = os.path.join(train_dir, "images", r["package_id"], r["sticker_id"] + ".png")
            imgs, labels = splits["valid" if r["package_id"] in valid else "train"]
            imgs.append(load_rgb(path, size))
            labels.append(first_tag(r["tags"]))
    test_dir = os.path.join(root, "test", "test_data")
    with open(os.path.join(root, "test", "test_labels.csv")) as f:
        test_labels = {int(r["index"]): first_tag(r["tags"]) for r in csv.DictReader(f)}
    imgs, labels = [], []
    with open(os.path.join(test_dir, "test_order.csv")) as f:
        for r in csv.DictReader(f):
            imgs.append(load_rgb(os.path.join(test_dir, "images", r["package_id"], r["sticker_id"] + ".png"), size))
            labels.append(test_labels[int(r["index"])])
    splits["test"] = (imgs, labels)
    return {k: (torch.from_numpy(np.stack(v[0])), torch.tensor(v[1])) for k, v in splits.items()}


def learning_rate(base, step, steps_per_epoch, total, warmup_epochs=1.0):
    warmup = round(min(warmup_epochs, total / steps_per_epoch) * steps_per_epoch)
    if step < warmup:
        return base * (step + 1) / warmup
    progress = min((step - warmup) / max(total - warmup, 1), 1.0)
    return base * 0.5 * (1.0 + math.cos(math.pi * progress))


def crop_window(side, scale, g):
    area = side * side
    lo, hi = math.log(3 / 4), math.log(4 / 3)
    for _ in range(10):
        u = torch.rand(4, generator=g).tolist()
        target = area * (scale[0] + (scale[1] - scale[0]) * u[0])
        ratio = math.exp(lo + (hi - lo) * u[1])
        w, h = math.sqrt(target * ratio), math.sqrt(target / ratio)
        if w <= side and h <= side:
            return (side - w) * u[2], (side - h) * u[3], w, h
    return 0.0, 0.0, float(side), float(side)


def augment(x, side, scale, jitter, g):
    """x: float [n, 3, S, S] in [0, 1]."""
    n = x.shape[0]
    theta = torch.zeros(n, 2, 3)
    for i in range(n):
        flip = -1.0 if torch.rand(1, generator=g).item() < 0.5 else 1.0
        x0, y0, w, h = crop_window(side, scale, g)
        theta[i, 0, 0] = w / side * flip
        theta[i, 0, 2] = (x0 + w / 2) / side * 2 - 1
        theta[i, 1, 1] = h / side
        theta[i, 1, 2] = (y0 + h / 2) / side * 2 - 1
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    if jitter > 0:
        f = (1 - jitter) + 2 * jitter * torch.rand(n, 3, generator=g)
        gray = lambda v: (0.299 * v[:, 0] + 0.587 * v[:, 1] + 0.114 * v[:, 2]).unsqueeze(1)
        x = (x * f[:, 0].view(n, 1, 1, 1)).clamp(0, 1)
        mean = gray(x).mean(dim=(1, 2, 3), keepdim=True)
        x = ((x - mean) * f[:, 1].view(n, 1, 1, 1) + mean).clamp(0, 1)
        gx = gray(x)
        x = ((x - gx) * f[:, 2].view(n, 1, 1, 1) + gx).clamp(0, 1)
    return x


def to_float(u8):
    return u8.permute(0, 3, 1, 2).float() / 255.0


def evaluate(model, images, labels, mean, std, batch):
    model.eval()
    loss_sum, correct = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(labels), batch):
            x = (to_float(images[i:i + batch]) - mean) / std
            logits = model(x)
            y = labels[i:i + batch]
            loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
            correct += (logits.argmax(1) == y).sum().item()
    return loss_sum / len(labels), correct / len(labels)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--model", default="resnet18")
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.002)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--crop", type=float, nargs=2, default=[0.6, 1.0])
    p.add_argument("--jitter", type=float, default=0.2)
    p.add_argument("--warmup-epochs", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0)
    a = p.parse_args()
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    data = read_data(a.data, a.size)
    train_x, train_y = data["train"]
    pixels = to_float(train_x)
    mean = pixels.mean(dim=(0, 2, 3)).view(1, 3, 1, 1)
    std = pixels.std(dim=(0, 2, 3)).view(1, 3, 1, 1)
    del pixels
    torch.manual_seed(a.seed)
    model = model_of(a.model)
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=a.weight_decay)
    spe = len(train_y) // a.batch if len(train_y) > a.batch else 1
    total = spe * a.epochs
    step = 0
    for epoch in range(1, a.epochs + 1):
        start = time.perf_counter()
        g = torch.Generator().manual_seed(a.seed * 1_000_003 + epoch)
        order = torch.randperm(len(train_y), generator=g)[: spe * a.batch].view(spe, -1)
        model.train()
        loss_sum, correct, seen = 0.0, 0, 0
        for idx in order:
            x = augment(to_float(train_x[idx]), a.size, a.crop, a.jitter, g)
            x = (x - mean) / std
            y = train_y[idx]
            for group in opt.param_groups:
                group["lr"] = learning_rate(a.lr, step, spe, total, a.warmup_epochs)
            logits = model(x)
            loss = F.cross_entropy(logits, y, label_smoothing=a.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            loss_sum += loss.item() * len(y)
            correct += (logits.argmax(1) == y).sum().item()
            seen += len(y)
        val_loss, val_acc = evaluate(model, *data["valid"], mean, std, 256)
        print(json.dumps({"epoch": epoch, "train_loss": loss_sum / seen, "train_acc": correct / seen,
                          "val_loss": val_loss, "val_acc": val_acc,
                          "seconds": time.perf_counter() - start}), flush=True)
    _, test_acc = evaluate(model, *data["test"], mean, std, 256)
    print(json.dumps({"test_acc": test_acc, "torch": torch.__version__}), flush=True)


if __name__ == "__main__":
    main()
