"""Training: the sharded train loop and its state (``flam-train``'s flags: ``flam_jax.cli.train``).

``trainer.train_and_evaluate`` is the testable loop; ``objective`` the two forward passes
and FLAM's losses; ``data`` the SED and global Grain iterators as one; ``aot`` the
compile-only check of a TPU topology; ``state``, ``sharding``, ``optim``, ``checkpoint``
and ``metrics`` hold the train state, mesh and partition rules, optax setup, Orbax
checkpointing (state, step and data iterator as one unit) and metric writers.
"""
