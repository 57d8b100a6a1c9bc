"""Training: the ``flam-train`` entry point, the sharded train loop and its state.

``main`` parses absl flags and the experiment config; ``trainer.train_and_evaluate`` is
the testable loop; ``state``, ``sharding``, ``optim``, ``checkpoint`` and ``metrics``
hold the train state, mesh and partition rules, optax setup, Orbax checkpointing (state,
step and data iterator as one unit) and metric writers.
"""
