"""Datasets for AI RUSH-style sticker classification: training rows from the dataset's CSV + label matrix, and test
rows from a meta CSV (package_id, sticker_id columns, found by name) + an image folder."""

import os

import pandas as pd
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

MEAN = [0.5, 0.5, 0.5]
STD = [0.5, 0.5, 0.5]


def load_rgb(path):
    """An RGBA sticker composited on white, as RGB."""
    with Image.open(path) as im:
        rgba = im.convert('RGBA')
    white = Image.new('RGBA', rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert('RGB')


def make_transform(input_size, train):
    steps = [transforms.Resize((input_size, input_size))]
    if train:
        steps.append(transforms.RandomHorizontalFlip())
    steps += [transforms.ToTensor(), transforms.Normalize(MEAN, STD)]
    return transforms.Compose(steps)


class StickerDataset(Dataset):
    """(image, label) for rows of the training CSV; `paths` and `labels` are aligned lists."""

    def __init__(self, paths, labels, transform):
        assert len(paths) == len(labels)
        self.paths = paths
        self.labels = labels
        self.transform = transform

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        return self.transform(load_rgb(self.paths[i])), int(self.labels[i])


class TestDataset(Dataset):
    """Images named by a meta CSV's package_id/sticker_id columns (other columns ignored), in the CSV's row order."""

    def __init__(self, image_dir, meta_csv, transform):
        meta = pd.read_csv(meta_csv, dtype={'package_id': str, 'sticker_id': str})
        self.paths = [os.path.join(image_dir, p, s + '.png') for p, s in zip(meta['package_id'], meta['sticker_id'])]
        self.transform = transform

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        return self.transform(load_rgb(self.paths[i]))


def make_loader(dataset, batch_size, shuffle, num_workers):
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=num_workers,
                      pin_memory=torch.cuda.is_available(), drop_last=False)
