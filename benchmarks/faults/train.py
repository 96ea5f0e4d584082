import time

lr = 0.01
epochs = 2
sleep = 0.3

for epoch in range(1, epochs + 1):
    time.sleep(sleep)
    print(f"step: {epoch}")
    print(f"loss: {lr * (epochs - epoch + 1):.6f}", flush=True)
with open("model.txt", "w") as f:
    f.write(str(lr))
