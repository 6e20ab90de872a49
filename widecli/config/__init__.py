"""Recipes: the typed schema, YAML loading with --set overrides, run identity and grid expansion."""
