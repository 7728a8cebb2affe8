"""The built-in trainer's recipe as a code session (`bench/code.sh`): rush's baseline_cnn (bench/torch_train_step.py),
AdamW, label smoothing, no augmentation, fp32, a PIL + DataLoader input pipeline at SIZE px (RGBA composited on white,
ImageNet normalisation), validation on the packages `packages.tsv` marks `valid`. Talks to rush through `nsml`: one
report and one checkpoint per epoch, with the epoch's seconds.
"""
import argparse
import csv
import os
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

import nsml
from torch_train_step import MODELS

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


class Stickers(torch.utils.data.Dataset):
    def __init__(self, rows, size):
        self.rows, self.size = rows, size

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        path, label = self.rows[i]
        img = Image.open(path).convert("RGBA").resize((self.size, self.size), Image.BILINEAR)
        white = Image.new("RGBA", img.size, (255, 255, 255, 255))
        rgb = np.asarray(Image.alpha_composite(white, img).convert("RGB"), dtype=np.float32) / 255.0
        return torch.from_numpy(((rgb - MEAN) / STD).transpose(2, 0, 1).copy()), label


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--lr", type=float, default=0.002)
    p.add_argument("--mode", default="train")
    p.add_argument("--iteration", default="0")
    p.add_argument("--pause", type=int, default=0)
    a = p.parse_args()
    torch.manual_seed(0)
    model = MODELS["baseline_cnn"]()

    def save(d):
        torch.save(model.state_dict(), os.path.join(d, "model.pt"))

    def load(d):
        model.load_state_dict(torch.load(os.path.join(d, "model.pt"), map_location="cpu"))

    nsml.bind(save=save, load=load, infer=None)
    data = os.path.join(nsml.DATASET_PATH, "train", "train_data")
    with open(os.path.join(data, "packages.tsv")) as f:
        valid_packages = {r["package_id"] for r in csv.DictReader(f, delimiter="\t") if r.get("split") == "valid"}
    train, valid = [], []
    with open(os.path.join(data, "train_with_valid_tags.csv")) as f:
        for r in csv.DictReader(f):
            item = (os.path.join(data, "images", r["package_id"], r["sticker_id"] + ".png"), int(r["tags"].split(",")[0]))
            (valid if r["package_id"] in valid_packages else train).append(item)
    loader = lambda rows, shuffle: torch.utils.data.DataLoader(  # noqa: E731
        Stickers(rows, a.size), batch_size=a.batch, shuffle=shuffle, num_workers=a.workers, drop_last=shuffle)
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=0.05)
    for epoch in range(1, a.epochs + 1):
        t0 = time.time()
        model.train()
        seen = correct = 0
        loss_sum = 0.0
        for x, y in loader(train, True):
            out = model(x)
            loss = F.cross_entropy(out, y, label_smoothing=0.1)
            opt.zero_grad()
            loss.backward()
            opt.step()
            loss_sum += loss.item() * len(y)
            correct += (out.argmax(1) == y).sum().item()
            seen += len(y)
        train_seconds = time.time() - t0
        model.eval()
        v_seen = v_correct = 0
        with torch.no_grad():
            for x, y in loader(valid, False):
                v_correct += (model(x).argmax(1) == y).sum().item()
                v_seen += len(y)
        nsml.report(summary=True, step=epoch, train__Loss=loss_sum / seen, train__Accuracy=correct / seen,
                    valid__Accuracy=v_correct / max(v_seen, 1), epoch_seconds=time.time() - t0,
                    train_seconds=train_seconds, images=seen)
        nsml.save(epoch)


if __name__ == "__main__":
    main()
