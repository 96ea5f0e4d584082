"""Ray engine: runs a TuneSpec's trials with Ray Tune.

    local_ray   an embedded, private, loopback-only Ray (cluster=local)
    searchers   search algorithms by name (random, grid, tpe)
    events      Ray Tune callbacks -> TrialOutcome events for a listener
    ray_tune    the Tuner: trials as a Ray Tune trainable

This package imports nothing itself: `local_ray` must set Ray's environment up
before anything imports Ray.
"""
