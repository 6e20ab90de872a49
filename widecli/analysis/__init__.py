"""Reading results: Table 1 and tables, plots, the NNGP kernel analysis and ablations."""

from widecli.analysis.export import load_metrics  # noqa: E402,F401  (widecli.analysis.load_metrics)
