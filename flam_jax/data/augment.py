"""Training-only augmentation: a clip heard through a narrower channel.

Real recordings reach a model at many bandwidths: game and telephone sounds are often
stored at 8 or 11.025 kHz, so nothing above 4 or 5.5 kHz survives, while most training
corpora are 44.1 kHz. ``band_limit`` removes everything above a cutoff drawn from the
Nyquist frequencies of the common low sample rates, so the model cannot lean on the top
octaves to recognise a sound. Labels stay as simulated: an event is still the same event,
only duller (the simulator's audibility threshold is A-weighted, and A-weighting puts
little weight above the lowest cutoff).
"""

import numpy as np

from flam_jax.timeline import SAMPLE_RATE

# Nyquist of 8, 11.025, 16 and 22.05 kHz recordings.
CUTOFFS_HZ = (4000.0, 5512.5, 8000.0, 11025.0)
# A raised-cosine roll-off this wide instead of a brick wall, which would ring.
ROLL_OFF_HZ = 500.0


def low_pass(audio: np.ndarray, cutoff_hz: float, rate: int = SAMPLE_RATE) -> np.ndarray:
    """``audio`` (float32, [samples]) without its content above ``cutoff_hz``."""
    spectrum = np.fft.rfft(audio)
    freqs = np.fft.rfftfreq(audio.shape[-1], 1.0 / rate)
    fall = np.clip((freqs - (cutoff_hz - ROLL_OFF_HZ)) / ROLL_OFF_HZ, 0.0, 1.0)
    spectrum *= 0.5 * (1.0 + np.cos(np.pi * fall))
    return np.fft.irfft(spectrum, n=audio.shape[-1]).astype(np.float32)


def band_limit(audio: np.ndarray, probability: float, rng: np.random.Generator) -> np.ndarray:
    """With ``probability``, ``audio`` low-passed at a random cutoff of ``CUTOFFS_HZ``.

    Draws nothing from ``rng`` when ``probability`` is 0, so that a pipeline without the
    augmentation gives the very elements it gave before it existed."""
    if probability <= 0.0 or rng.random() >= probability:
        return audio
    return low_pass(audio, CUTOFFS_HZ[int(rng.integers(len(CUTOFFS_HZ)))])
