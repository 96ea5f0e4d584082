"""Resume and warm start: a tune's state in its run directory, read back.

journal     every trial event, appended to `journal.jsonl` in the tune run
leftovers   what a killed attempt left: processes, Ray's temp dir, runs
prior       the trials a new attempt starts from (finished, to run again)
reuse       the steps an interrupted trial completed, not run again
warm_start  finished trials of earlier tune runs of the same operation
"""
