"""Running runs: the one run path (lease -> train -> write), sweep planning, executors, preflight."""
