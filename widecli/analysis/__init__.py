"""Reading results: Table 1 and tables, plots, the NNGP kernel analysis, ablations, tuning, export."""
