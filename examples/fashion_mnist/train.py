"""Trains the small CNN on Fashion-MNIST; prints `step`, `loss` and `val_acc`
every epoch, and saves the model to `model.pt`."""

import argparse
import sys
import time

import torch
from torch import nn

import fashion_data as data
from model import SmallCNN, accuracy_and_loss, pick_device


def main() -> int:
    args = _args()
    torch.manual_seed(args.seed)
    device = pick_device(args.device)
    try:
        images, labels = data.load(data.data_dir(args.data_dir), "train")
    except data.DataError as e:
        print(f"train: {e}", file=sys.stderr)
        return 1
    train_x, train_y, val_x, val_y = _split(images, labels, args.val_fraction)
    print(f"Training on {len(train_x)} images, validating on {len(val_x)} ({device})")
    model = SmallCNN(args.hidden, args.dropout).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    for epoch in range(1, args.epochs + 1):
        started = time.time()
        loss = _epoch(model, optimizer, train_x, train_y, args.batch_size, device)
        val_acc, val_loss = accuracy_and_loss(model, val_x, val_y, device)
        # Guild reads these lines as scalars (step, then values at that step).
        print(f"step: {epoch}")
        print(f"loss: {loss:.6f}")
        print(f"val_loss: {val_loss:.6f}")
        print(f"val_acc: {val_acc:.6f}")
        print(f"epoch_seconds: {time.time() - started:.2f}", flush=True)
    torch.save(
        {"state": model.state_dict(), "hidden": args.hidden, "dropout": args.dropout},
        "model.pt",
    )
    return 0


def _args() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lr", type=float, default=0.001)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--dropout", type=float, default=0.25)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--val-fraction", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--data-dir", default="")
    return parser.parse_args()


def _split(images, labels, val_fraction: float):
    """The last `val_fraction` of the training set validates (the test set is
    left to `evaluate`)."""
    n_val = max(1, int(len(images) * val_fraction))
    return images[:-n_val], labels[:-n_val], images[-n_val:], labels[-n_val:]


def _epoch(model, optimizer, images, labels, batch_size: int, device) -> float:
    model.train()
    order = torch.randperm(len(images))
    total = 0.0
    for start in range(0, len(images), batch_size):
        index = order[start : start + batch_size]
        x, y = images[index].to(device), labels[index].to(device)
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        total += loss.item() * len(index)
    return total / len(images)


if __name__ == "__main__":
    sys.exit(main())
