"""Evaluates the model its trial trained: prints `acc_val`."""

import json

import toy

with open("model.json") as f:
    model = json.load(f)

acc = toy.accuracy(model["lr"], model["batch_size"], model["dropout"], model["epochs"])
print(f"acc_val: {acc * 0.98:.6f}")
