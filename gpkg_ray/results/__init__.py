"""Results of a tune: trial record runs, the trials table, scalars, progress."""
