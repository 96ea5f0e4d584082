"""Trains the toy model: prints `step`, `loss` and `acc` every epoch."""

import json
import time

import toy

lr = 0.01
batch_size = 64
dropout = 0.1
epochs = 4

for epoch in range(epochs):
    time.sleep(0.1)  # an epoch of work
    acc = toy.accuracy(lr, batch_size, dropout, epoch)
    print(f"step: {epoch}")
    print(f"loss: {1 - acc:.6f}")
    print(f"acc: {acc:.6f}")

with open("model.json", "w") as f:
    json.dump(
        {"lr": lr, "batch_size": batch_size, "dropout": dropout, "epochs": epochs}, f
    )
