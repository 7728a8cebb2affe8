"""A small CNN for 350-way sticker classification: conv-bn-relu blocks, global average pool, a linear layer."""

import torch.nn as nn

NUM_CLASSES = 350


def block(cin, cout):
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


class SmallCNN(nn.Module):
    def __init__(self, num_classes=NUM_CLASSES, width=32):
        super().__init__()
        self.features = nn.Sequential(
            block(3, width),
            block(width, width * 2),
            block(width * 2, width * 4),
            block(width * 4, width * 4),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width * 4, num_classes)

    def forward(self, x):
        return self.fc(self.pool(self.features(x)).flatten(1))
