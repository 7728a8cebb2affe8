"""PyTorch DataLoader reference for `rush bench epoch`: a standard input pipeline (torch DataLoader with worker
processes, PIL decode of the RGBA sticker PNGs, resize to SIZE (bilinear), composite on white, random resized crop and
horizontal flip, pinned memory on CUDA) feeding the same model, size, batch, precision and optimizer as
`bench/torch_train_step.py` (SGD lr 0.1, momentum 0.9, weight decay 5e-4; bf16 autocast on the device, channels-last
on CUDA).
Trains EPOCHS epochs over the dataset's training CSV (full batches) and prints one JSON line with each epoch's images,
seconds and data-wait seconds (time the loop spent in the DataLoader).

Usage: python bench/torch_epoch.py --dataset DIR --model resnet18 --size 128 --batch 256 --epochs 2 --workers 16
       [--limit N]  (only the first N stickers: the images-per-second figure needs no full pass)
"""
import argparse
import csv
import json
import math
import os
import random
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_train_step import MODELS, NUM_TAGS  # noqa: E402

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


class Stickers(torch.utils.data.Dataset):
    def __init__(self, root, size, scale, limit):
        data = os.path.join(root, "train", "train_data")
        with open(os.path.join(data, "train_with_valid_tags.csv")) as f:
            rows = list(csv.DictReader(f))
        if limit:
            rows = rows[:limit]
        self.items = [(os.path.join(data, "images", r["package_id"], r["sticker_id"] + ".png"),
                       int(r["tags"].split(",")[0])) for r in rows]
        self.size, self.scale = size, scale

    def __len__(self):
        return len(self.items)

    def crop(self, rng):  # torchvision's RandomResizedCrop window on a size x size image
        area = self.size * self.size
        for _ in range(10):
            target = area * rng.uniform(*self.scale)
            ratio = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
            w, h = math.sqrt(target * ratio), math.sqrt(target / ratio)
            if w <= self.size and h <= self.size:
                x, y = rng.uniform(0, self.size - w), rng.uniform(0, self.size - h)
                return (x, y, x + w, y + h)
        return (0, 0, self.size, self.size)

    def __getitem__(self, i):
        path, label = self.items[i]
        s = self.size
        with Image.open(path) as im:
            rgba = im.convert("RGBA").resize((s, s), Image.BILINEAR)
        white = Image.new("RGBA", (s, s), (255, 255, 255, 255))
        rgb = Image.alpha_composite(white, rgba).convert("RGB")
        rng = random.Random()
        rgb = rgb.resize((s, s), Image.BILINEAR, box=self.crop(rng))
        if rng.random() < 0.5:
            rgb = rgb.transpose(Image.FLIP_LEFT_RIGHT)
        return torch.from_numpy(np.asarray(rgb).copy()), label


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--dataset", required=True)
    p.add_argument("--model", default="resnet18", choices=sorted(MODELS))
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--workers", type=int, default=os.cpu_count())
    p.add_argument("--limit", type=int, default=0, help="use only the first LIMIT stickers (0: all)")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = p.parse_args()
    torch.manual_seed(0)
    dev = torch.device(a.device)
    cuda = dev.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True
    fmt = torch.channels_last if cuda else torch.contiguous_format
    model = MODELS[a.model]().to(dev, memory_format=fmt).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    bf16 = a.precision == "bf16"
    data = Stickers(a.dataset, a.size, (0.6, 1.0), a.limit)
    loader = torch.utils.data.DataLoader(data, batch_size=a.batch, shuffle=True, drop_last=True,
                                         num_workers=a.workers, pin_memory=cuda,
                                         persistent_workers=a.workers > 0)
    mean, std = (MEAN * 255).to(dev), (STD * 255).to(dev)
    epochs = []
    for _ in range(a.epochs):
        images, waited = 0, 0.0
        start = time.perf_counter()
        it = iter(loader)
        while True:
            t = time.perf_counter()
            try:
                x, y = next(it)
            except StopIteration:
                break
            waited += time.perf_counter() - t
            x = x.to(dev, non_blocking=True).permute(0, 3, 1, 2).float()
            x = ((x - mean) / std).contiguous(memory_format=fmt)
            y = y.to(dev, non_blocking=True)
            opt.zero_grad(set_to_none=True)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
                logits = model(x)
            loss = F.cross_entropy(logits.float(), y)
            loss.backward()
            opt.step()
            images += x.shape[0]
        if cuda:
            torch.cuda.synchronize()
        epochs.append({"images": images, "seconds": time.perf_counter() - start, "data_wait": waited})
    print(json.dumps({"epochs": epochs, "workers": a.workers, "torch": torch.__version__,
                      "loss": float(loss.detach()), "classes": NUM_TAGS}))


if __name__ == "__main__":
    main()
