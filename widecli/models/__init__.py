"""Architectures, their registry (`models.registry`), layout helpers and seeded init."""
