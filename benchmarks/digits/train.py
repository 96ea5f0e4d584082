"""The Guild op: trains (mlp.py) and prints `step` and `val_acc` each epoch,
which Guild records as the run's scalars."""

from mlp import train

lr = 0.001
hidden = 64
alpha = 0.0001
epochs = 20
seed = 0


def _print(epoch: int, acc: float) -> bool:
    print(f"step: {epoch}")
    print(f"val_acc: {acc:.5f}", flush=True)
    return False


train(lr, hidden, alpha, epochs, seed, _print)
