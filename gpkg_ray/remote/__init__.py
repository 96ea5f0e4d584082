"""A Ray cluster as a Guild remote (`type: ray-cluster` in the user's Guild
config): its config, how to reach it and what its nodes hold, and the Guild
remote type that wires `guild remote status` to them."""
