"""Evaluation: SED metrics (frame AUROC, PSDS, F1s, MPAUC), retrieval, zero-shot and the runner.

``postprocess`` turns frame scores into events; ``sed``, ``retrieval`` and ``zeroshot``
compute metrics that agree with the community toolkits; ``runner`` drives
``flam-evaluate`` over the standard benchmarks and provides the trainer's validation hook.
"""
