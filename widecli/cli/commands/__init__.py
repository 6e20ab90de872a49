"""The commands, by what they do: preview what a recipe trains (`preview`: check, layers), train
(`training`: train, sweep), read the store (`results`: report, runs, export), and the studies built on
top (`studies`: ablate, tune, kernel). Each parses its options, calls the package below and renders."""
