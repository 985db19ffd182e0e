"""``zoo-bench``: the twin benchmark (tasks, versioned splits, baselines, one table)."""
