"""An AI RUSH 2019-style baseline (sticker classification, 350 classes) for rush's code sessions: train a small CNN,
report metrics and save a checkpoint every epoch through `nsml`, and answer submissions through `nsml.paused`."""

import argparse
import os
import sys
import time

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm import tqdm

import nsml
from nsml import DATASET_PATH
from dataloader import StickerDataset, TestDataset, make_loader, make_transform
from model import SmallCNN


def bind_model(model, args, device):
    def save(dir_name, **kwargs):
        torch.save(model.state_dict(), os.path.join(dir_name, 'model.pt'))
        print('model saved to', dir_name, file=sys.stderr)

    def load(dir_name, **kwargs):
        state = torch.load(os.path.join(dir_name, 'model.pt'), map_location='cpu')
        model.load_state_dict(state)
        model.to(device)
        print('model loaded from', dir_name, file=sys.stderr)

    def infer(test_image_data_path, test_meta_data_path, **kwargs):
        dataset = TestDataset(test_image_data_path, test_meta_data_path, make_transform(args.input_size, train=False))
        loader = make_loader(dataset, args.batch_size, shuffle=False, num_workers=args.num_workers)
        model.eval()
        probs = []
        with torch.no_grad():
            for images in loader:
                probs.append(F.softmax(model(images.to(device)), dim=1).cpu())
        if not probs:
            return np.zeros((0, model.fc.out_features), dtype=np.float32)
        return torch.cat(probs).numpy().astype(np.float32)

    nsml.bind(save=save, load=load, infer=infer)


def pick_device(requested):
    if requested == 'cpu':
        return torch.device('cpu')
    if not torch.cuda.is_available():
        print('--device %s: CUDA is not available, using the CPU' % requested, file=sys.stderr)
        return torch.device('cpu')
    return torch.device('cuda:%s' % requested if requested.isdigit() else requested)


def train_valid_split(meta):
    """Row indices (train, valid), split by package: packages.tsv's split column when present, else every 10th
    package id validates."""
    packages_tsv = os.path.join(DATASET_PATH, 'train', 'train_data', 'packages.tsv')
    pkg = meta['package_id'].astype(str)
    if os.path.exists(packages_tsv):
        packages = pd.read_csv(packages_tsv, sep='\t', dtype={'package_id': str})
        valid_packages = set(packages.loc[packages['split'] == 'valid', 'package_id'])
    else:
        ids = sorted(set(pkg), key=lambda p: (len(p), p))
        valid_packages = set(ids[::10])
    is_valid = pkg.isin(valid_packages).to_numpy()
    return np.flatnonzero(~is_valid), np.flatnonzero(is_valid)


def run_epoch(model, loader, device, optimizer=None):
    """(mean loss, accuracy) over the loader; trains when an optimizer is given."""
    training = optimizer is not None
    model.train(training)
    total_loss, correct, seen = 0.0, 0, 0
    with torch.set_grad_enabled(training):
        for images, labels in tqdm(loader, leave=False, disable=not sys.stderr.isatty()):
            images, labels = images.to(device), labels.to(device)
            logits = model(images)
            loss = F.cross_entropy(logits, labels)
            if training:
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            total_loss += loss.item() * labels.size(0)
            correct += (logits.argmax(1) == labels).sum().item()
            seen += labels.size(0)
    if seen == 0:
        return float('nan'), float('nan')
    return total_loss / seen, correct / seen


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--epochs', type=int, default=10)
    parser.add_argument('--batch_size', type=int, default=64)
    parser.add_argument('--lr', type=float, default=1e-3)
    parser.add_argument('--input_size', type=int, default=64)
    parser.add_argument('--device', type=str, default='0')
    parser.add_argument('--num_workers', type=int, default=2)
    # reserved for NSML
    parser.add_argument('--mode', type=str, default='train')
    parser.add_argument('--iteration', type=str, default='0')
    parser.add_argument('--pause', type=int, default=0)
    args = parser.parse_args()

    torch.manual_seed(0)
    device = pick_device(args.device)
    model = SmallCNN().to(device)
    bind_model(model, args, device)
    if args.pause:
        nsml.paused(scope=locals())

    train_dir = os.path.join(DATASET_PATH, 'train')
    meta = pd.read_csv(os.path.join(train_dir, 'train_data', 'train_with_valid_tags.csv'),
                       dtype={'package_id': str, 'sticker_id': str})
    label_matrix = np.load(os.path.join(train_dir, 'train_label'))
    assert len(label_matrix) == len(meta), 'train_label has %d rows, the CSV %d' % (len(label_matrix), len(meta))
    labels = np.argmax(label_matrix, axis=1)
    paths = [os.path.join(train_dir, 'train_data', 'images', p, s + '.png')
             for p, s in zip(meta['package_id'], meta['sticker_id'])]
    train_idx, valid_idx = train_valid_split(meta)
    print('%d training images, %d validation images' % (len(train_idx), len(valid_idx)), file=sys.stderr)

    train_set = StickerDataset([paths[i] for i in train_idx], labels[train_idx], make_transform(args.input_size, True))
    valid_set = StickerDataset([paths[i] for i in valid_idx], labels[valid_idx], make_transform(args.input_size, False))
    train_loader = make_loader(train_set, args.batch_size, shuffle=True, num_workers=args.num_workers)
    valid_loader = make_loader(valid_set, args.batch_size, shuffle=False, num_workers=args.num_workers)

    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(args.epochs, 1))
    for epoch in range(1, args.epochs + 1):
        start = time.time()
        train_loss, train_acc = run_epoch(model, train_loader, device, optimizer)
        valid_loss, valid_acc = run_epoch(model, valid_loader, device)
        scheduler.step()
        print('epoch %d/%d  train loss %.4f acc %.4f  valid loss %.4f acc %.4f  (%.1fs)'
              % (epoch, args.epochs, train_loss, train_acc, valid_loss, valid_acc, time.time() - start),
              file=sys.stderr)
        nsml.report(summary=True, step=epoch, epoch_total=args.epochs,
                    train__Loss=train_loss, train__Accuracy=train_acc,
                    valid__Loss=valid_loss, valid__Accuracy=valid_acc)
        nsml.save(epoch)


if __name__ == '__main__':
    main()
