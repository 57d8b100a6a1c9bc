"""Evaluation: SED metrics (frame AUROC, PSDS, F1s, MPAUC), retrieval, zero-shot and the runner.

``postprocess`` turns frame scores into events; the ``sed`` package, ``event_based``,
``retrieval`` and ``zeroshot`` compute metrics that agree with the community toolkits;
``benchmarks`` reads the standard benchmarks, ``runner`` drives ``flam-evaluate`` over
them and ``report`` writes the results; ``hook`` is the trainer's validation hook.
"""
