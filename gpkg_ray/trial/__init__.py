"""A trial: its steps run as Guild runs, their scalars read while they run."""
