"""`flam-convert-openflam` (placeholder until the model issue lands)."""

from flam_jax.cli import not_built

run = not_built("flam-convert-openflam", "model issue")
