"""Evaluation: SED metrics (frame AUROC, PSDS, F1s, MPAUC), retrieval, zero-shot, grounding and the runner.

``postprocess`` turns frame scores into events; the ``sed`` package, ``event_based``,
``retrieval`` and ``zeroshot`` compute metrics that agree with the community toolkits;
``grounding`` holds the text-to-audio grounding protocol (AudioGrounding); ``benchmarks``
reads the standard benchmarks, ``runner`` drives ``flam-evaluate`` over them, ``suite``
runs a whole suite into one table beside the published numbers and ``report`` writes the
results; ``hook`` is the trainer's validation hook.
"""
