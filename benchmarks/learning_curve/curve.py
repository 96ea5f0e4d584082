"""A synthetic training run: prints `step` and `val_acc` each epoch.

Final accuracy peaks at lr=1e-2 and grows with width; a higher lr learns a little
faster, so early epochs do not rank trials exactly as late ones do (the curves
cross, as real ones can). Noise is seeded by the flags: a config always gives
the same curve.
"""

import math
import random
import time

lr = 0.01
width = 64
epochs = 27
epoch_seconds = 0.3
seed = 0

quality = math.exp(-((math.log10(lr) + 2) ** 2) / 1.5)
final = 0.5 + 0.35 * quality + 0.05 * math.log2(width / 16) / 4
speed = 0.25 * (lr / 0.01) ** 0.15
rng = random.Random(f"{lr}-{width}-{seed}")

for epoch in range(epochs):
    time.sleep(epoch_seconds)
    progress = 1 - math.exp(-speed * (epoch + 1))
    val_acc = 0.1 + (final - 0.1) * progress + rng.gauss(0, 0.002)
    print(f"step: {epoch}")
    print(f"val_acc: {val_acc:.5f}")
