"""Pictures for ``flam-detect``: a spectrogram over one activation row per query, events marked."""

from __future__ import annotations

import io

import numpy as np

from flam_jax import paths
from flam_jax.timeline import SAMPLE_RATE

MAX_COLUMNS = 2000  # spectrogram columns drawn, whatever the length of the recording


def log_spectrogram(wave: np.ndarray, rate: int = SAMPLE_RATE) -> tuple[np.ndarray, float]:
    """(dB power [freq, time] up to 16 kHz, seconds per column); the hop grows with the length."""
    from scipy import signal  # lazy, like matplotlib: only a --plot needs them

    hop = max(480, int(np.ceil(len(wave) / MAX_COLUMNS)))
    nperseg = 1024
    wave = np.pad(wave, (0, max(0, nperseg - len(wave))))
    freqs, _, power = signal.spectrogram(wave, fs=rate, nperseg=nperseg, noverlap=max(0, nperseg - hop))
    step = nperseg - max(0, nperseg - hop)
    keep = freqs <= 16000
    return 10 * np.log10(power[keep] + 1e-10), step / rate


def plot_detection(wave: np.ndarray, detection, out_path: str, threshold: float | None = None) -> str:
    """Write a PNG: spectrogram on top, then one row per query (scores, threshold, events)."""
    import matplotlib  # lazy: a plot is optional, and matplotlib takes a second to import

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    timeline = detection.timeline
    queries = timeline.texts
    spec, seconds_per_column = log_spectrogram(wave)
    duration = timeline.duration_s
    fig, axes = plt.subplots(
        1 + len(queries),
        1,
        figsize=(12, 2.2 + 0.9 * len(queries)),
        sharex=True,
        gridspec_kw={"height_ratios": [3] + [1] * len(queries)},
        squeeze=False,
    )
    axes = axes[:, 0]
    axes[0].imshow(
        spec,
        origin="lower",
        aspect="auto",
        extent=(0, spec.shape[1] * seconds_per_column, 0, 16),
        cmap="magma",
        vmin=spec.max() - 80,
    )
    axes[0].set_ylabel("kHz")
    axes[0].set_title(f"{timeline.source} ({duration:.1f} s)")
    hop = 1.0 / timeline.frame_rate_hz
    edges = np.arange(timeline.scores.shape[1] + 1) * hop
    for ax, text, scores, events in zip(
        axes[1:], queries, timeline.scores, detection.events_per_query, strict=True
    ):
        ax.stairs(scores, edges, color="tab:blue", linewidth=1.2)
        if threshold is not None:
            ax.axhline(threshold, color="gray", linestyle="--", linewidth=0.8)
        for e in events:
            ax.axvspan(e.onset, e.offset, color="tab:orange", alpha=0.35)
            axes[0].axvspan(e.onset, e.offset, ymin=0.97, ymax=1.0, color="tab:orange")
        ax.set_ylim(0, 1)
        ax.set_yticks([0, 1])
        ax.set_ylabel(
            text if len(text) <= 24 else text[:23] + "…", rotation=0, ha="right", va="center", fontsize=8
        )
    axes[-1].set_xlim(0, duration)
    axes[-1].set_xlabel("time (s)")
    fig.tight_layout()
    save_figure(fig, out_path, dpi=90)
    return out_path


def save_figure(fig, out_path: str, dpi: int) -> None:
    """Save a matplotlib figure as PNG to a local or remote path, and close it."""
    import matplotlib.pyplot as plt  # lazy, as in plot_detection

    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=dpi, format="png")
    plt.close(fig)
    paths.write_bytes(out_path, buffer.getvalue())
