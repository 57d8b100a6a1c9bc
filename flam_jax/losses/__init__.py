"""Losses: FLAM's objectives on embeddings, independent of the model code.

``contrastive`` is the global InfoNCE (and a sigmoid variant); ``framewise`` the
frame-wise sigmoid loss with per-text scale and bias, both as a dense single-device
reference and as a ``shard_map`` ring that never materialises the global logit tensor;
``prior`` the per-text bias prior loss; ``total`` the weighted sum and its metrics.
"""
