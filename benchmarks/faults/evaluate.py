with open("model.txt") as f:
    lr = float(f.read())
print(f"acc: {1 - lr:.6f}")
