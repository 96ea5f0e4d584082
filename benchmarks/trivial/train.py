import time

lr = 0.01
work = 0.0

end = time.process_time() + work
while time.process_time() < end:
    pass
with open("model.txt", "w") as f:
    f.write(str(lr))
print(f"loss: {lr:.6f}")
