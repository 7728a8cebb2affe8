"""Reads a rush checkpoint the way a Python user would, and checks it.

    read_checkpoint.py WEIGHTS --model NAME [--logits FILE]

WEIGHTS is a `checkpoints/<epoch>.safetensors`. The script loads it with `safetensors.torch.load_file`, checks that the
tensor names and shapes are those of the model (for the ResNets, torchvision's state_dict names without
`num_batches_tracked`), that every tensor is finite float32, and, with `--logits FILE` (a safetensors file holding
`input` and `logits` computed by rush from the same weights), rebuilds the baseline CNN in PyTorch, loads the weights
strictly and compares its eval-mode logits with rush's. Prints one JSON line; exits non-zero with a message on failure.
"""

import argparse
import json
import sys

import torch
from safetensors.torch import load_file

CLASSES = 350


def bn(prefix, c):
    return {f"{prefix}.{k}": [c] for k in ("weight", "bias", "running_mean", "running_var")}


def baseline_cnn_shapes():
    shapes = {}
    c_in = 3
    for i in range(5):
        shapes[f"blocks.{i}.conv.weight"] = [256, c_in, 3, 3]
        shapes[f"blocks.{i}.conv.bias"] = [256]
        shapes.update(bn(f"blocks.{i}.bn", 256))
        c_in = 256
    shapes["head.weight"] = [CLASSES, 256, 1, 1]
    shapes["head.bias"] = [CLASSES]
    return shapes


def resnet_basic_shapes(blocks):
    shapes = {"conv1.weight": [64, 3, 7, 7], **bn("bn1", 64)}
    c_in = 64
    for layer, (count, c) in enumerate(zip(blocks, (64, 128, 256, 512)), start=1):
        for j in range(count):
            p = f"layer{layer}.{j}"
            shapes[f"{p}.conv1.weight"] = [c, c_in, 3, 3]
            shapes.update(bn(f"{p}.bn1", c))
            shapes[f"{p}.conv2.weight"] = [c, c, 3, 3]
            shapes.update(bn(f"{p}.bn2", c))
            if j == 0 and c_in != c:
                shapes[f"{p}.downsample.0.weight"] = [c, c_in, 1, 1]
                shapes.update(bn(f"{p}.downsample.1", c))
            c_in = c
    shapes["fc.weight"] = [CLASSES, 512]
    shapes["fc.bias"] = [CLASSES]
    return shapes


EXPECTED = {
    "baseline_cnn": baseline_cnn_shapes,
    "resnet18": lambda: resnet_basic_shapes((2, 2, 2, 2)),
    "resnet34": lambda: resnet_basic_shapes((3, 4, 6, 3)),
}


class BaselineCnn(torch.nn.Module):
    """rush's baseline: five (3x3 stride-2 conv, ReLU, BatchNorm) blocks, a 1x1 conv head, a global average pool."""

    def __init__(self):
        super().__init__()
        blocks = []
        c_in = 3
        for _ in range(5):
            block = torch.nn.Module()
            block.conv = torch.nn.Conv2d(c_in, 256, 3, stride=2, padding=1)
            block.bn = torch.nn.BatchNorm2d(256)
            blocks.append(block)
            c_in = 256
        self.blocks = torch.nn.ModuleList(blocks)
        self.head = torch.nn.Conv2d(256, CLASSES, 1)

    def forward(self, x):
        for b in self.blocks:
            x = b.bn(torch.relu(b.conv(x)))
        return self.head(x).mean(dim=(2, 3))


def fail(message):
    print(f"read_checkpoint.py: {message}", file=sys.stderr)
    sys.exit(1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("weights")
    ap.add_argument("--model", required=True, choices=sorted(EXPECTED))
    ap.add_argument("--logits")
    args = ap.parse_args()

    tensors = load_file(args.weights)
    expected = EXPECTED[args.model]()
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    if missing or extra:
        fail(f"{args.weights}: missing {missing[:5]} ({len(missing)}), unexpected {extra[:5]} ({len(extra)})")
    for name, shape in expected.items():
        t = tensors[name]
        if list(t.shape) != shape:
            fail(f"{args.weights}: {name} has shape {list(t.shape)}, expected {shape}")
        if t.dtype != torch.float32:
            fail(f"{args.weights}: {name} is {t.dtype}, expected float32")
        if not torch.isfinite(t).all():
            fail(f"{args.weights}: {name} has non-finite values")

    max_diff = None
    if args.logits:
        if args.model != "baseline_cnn":
            fail("--logits is only implemented for baseline_cnn")
        ref = load_file(args.logits)
        model = BaselineCnn()
        # Only the parameters and running statistics are saved; num_batches_tracked is PyTorch's bookkeeping.
        model.load_state_dict({**tensors, **{f"blocks.{i}.bn.num_batches_tracked": torch.tensor(0) for i in range(5)}})
        model.eval()
        with torch.no_grad():
            logits = model(ref["input"])
        max_diff = (logits - ref["logits"]).abs().max().item()
        if not torch.allclose(logits, ref["logits"], atol=1e-4, rtol=1e-4):
            fail(f"PyTorch's logits differ from rush's by up to {max_diff}")

    params = sum(t.numel() for n, t in tensors.items() if not n.endswith(("running_mean", "running_var")))
    print(json.dumps({"ok": True, "tensors": len(tensors), "params": params, "max_logit_diff": max_diff}))


if __name__ == "__main__":
    main()
