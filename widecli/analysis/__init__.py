"""Reading results: Table 1 and tables, plots, the NNGP kernel analysis and ablations."""
