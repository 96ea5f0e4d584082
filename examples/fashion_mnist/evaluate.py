"""Scores the model its trial trained (`model.pt` of the required `train` run)
on the test set: prints `test_acc` and `test_loss`."""

import argparse
import sys

import torch

import fashion_data as data
from model import SmallCNN, accuracy_and_loss, pick_device


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="auto")
    parser.add_argument("--data-dir", default="")
    args = parser.parse_args()
    device = pick_device(args.device)
    try:
        images, labels = data.load(data.data_dir(args.data_dir), "test")
    except data.DataError as e:
        print(f"evaluate: {e}", file=sys.stderr)
        return 1
    saved = torch.load("model.pt", map_location=device)
    model = SmallCNN(saved["hidden"], saved["dropout"]).to(device)
    model.load_state_dict(saved["state"])
    test_acc, test_loss = accuracy_and_loss(model, images, labels, device)
    print(f"Test set: {len(images)} images")
    print(f"test_loss: {test_loss:.6f}")
    print(f"test_acc: {test_acc:.6f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
