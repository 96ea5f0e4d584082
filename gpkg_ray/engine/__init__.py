"""Ray engine: runs a prepared tune's trials with Ray Tune.

    driver         the one entry point: run_tune(prepared, listener, stop)
    local_ray      an embedded, private, loopback-only Ray (cluster=local)
    cluster_ray    joining a ray-cluster remote, runs coming home
    search_inputs  what a search starts from, as plain data
    searchers      search algorithms by name (random, grid, tpe)
    schedulers     trial schedulers by name (fifo, asha, hyperband, median)
    ray_tune       the Tuner: trials as a Ray Tune trainable, its callbacks
    events         Ray Tune callbacks -> TrialOutcome events for a listener
    interrupts     Ctrl-C, SIGTERM and `guild stop`: a clean stop

This package imports nothing itself: `local_ray` must set Ray's environment up
before anything imports Ray.
"""
