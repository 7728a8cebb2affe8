"""PyTorch eager reference for `rush bench train`: the same model (torchvision's ResNets with 350 outputs, as
bench/torch_recipe.py trains them; the same layout defined here where torchvision is missing, as on a GPU machine's
bare torch venv; rush's baseline CNN), size, batch, precision and optimizer (SGD lr 0.1, momentum 0.9, weight
decay 5e-4) on one fixed random batch already on the device. bf16 = torch.autocast on the device (CUDA, or the CPU,
as rush does on a CPU with native bf16); channels-last on CUDA.
Prints one JSON line: images_per_sec, seconds, steps, torch.

Usage: python bench/torch_train_step.py --model resnet18 --size 64 --batch 32 --steps 10 [--device cuda] [--compile]
"""
import argparse
import json
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

NUM_TAGS = 350


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin, planes, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or cin != planes:
            self.downsample = nn.Sequential(nn.Conv2d(cin, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + (x if self.downsample is None else self.downsample(x)))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin, planes, stride):
        super().__init__()
        out = planes * 4
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.downsample = None
        if stride != 1 or cin != out:
            self.downsample = nn.Sequential(nn.Conv2d(cin, out, 1, stride, bias=False), nn.BatchNorm2d(out))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return F.relu(y + (x if self.downsample is None else self.downsample(x)))


class ResNet(nn.Module):
    def __init__(self, block, layers, classes=NUM_TAGS):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        cin = 64
        for i, (planes, n) in enumerate(zip([64, 128, 256, 512], layers)):
            blocks = []
            for j in range(n):
                blocks.append(block(cin, planes, 2 if (j == 0 and i > 0) else 1))
                cin = planes * block.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.fc = nn.Linear(cin, classes)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2, 1)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class BaselineCnn(nn.Module):
    """rush's baseline_cnn: five (3x3 stride-2 conv, 256 channels, ReLU, BatchNorm) blocks, a 1x1 conv, global pool."""

    def __init__(self, classes=NUM_TAGS):
        super().__init__()
        blocks, cin = [], 3
        for _ in range(5):
            blocks += [nn.Conv2d(cin, 256, 3, 2, 1), nn.ReLU(), nn.BatchNorm2d(256)]
            cin = 256
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Conv2d(256, classes, 1)

    def forward(self, x):
        return torch.flatten(F.adaptive_avg_pool2d(self.head(self.blocks(x)), 1), 1)


def resnet(name, block, layers):
    """torchvision's model where it is installed, else the same layout defined above."""
    try:
        import torchvision

        return getattr(torchvision.models, name)(num_classes=NUM_TAGS)
    except ImportError:
        return ResNet(block, layers)


MODELS = {
    "baseline_cnn": lambda: BaselineCnn(),
    "resnet18": lambda: resnet("resnet18", BasicBlock, [2, 2, 2, 2]),
    "resnet34": lambda: resnet("resnet34", BasicBlock, [3, 4, 6, 3]),
    "resnet50": lambda: resnet("resnet50", Bottleneck, [3, 4, 6, 3]),
}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="resnet18", choices=sorted(MODELS))
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--compile", action="store_true")
    a = p.parse_args()
    torch.manual_seed(0)
    dev = torch.device(a.device)
    cuda = dev.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True
    fmt = torch.channels_last if cuda else torch.contiguous_format
    model = MODELS[a.model]().to(dev, memory_format=fmt).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    x = torch.randn(a.batch, 3, a.size, a.size, device=dev).to(memory_format=fmt)
    y = torch.randint(0, NUM_TAGS, (a.batch,), device=dev)
    bf16 = a.precision == "bf16"

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y)
        loss.backward()
        opt.step()
        return loss.detach()

    if a.compile:
        step = torch.compile(step)
    for _ in range(a.warmup):
        step()
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(a.steps):
        loss = step()
    loss = float(loss)
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    print(json.dumps({"images_per_sec": a.steps * a.batch / seconds, "seconds": seconds, "steps": a.steps,
                      "loss": loss, "torch": torch.__version__}))


if __name__ == "__main__":
    main()
