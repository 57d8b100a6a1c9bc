"""`flam-search` (placeholder until the inference and export issue lands)."""

from flam_jax.cli import not_built

run = not_built("flam-search", "inference and export issue")
