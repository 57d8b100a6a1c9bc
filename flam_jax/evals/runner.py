"""`flam-evaluate` (placeholder until the evaluation issue lands)."""

from flam_jax.cli import not_built

run = not_built("flam-evaluate", "evaluation issue")
