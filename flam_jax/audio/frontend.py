"""FLAM's audio front end in JAX: waveform (B, N) -> log-mel image (B, 256, 256, 1), NHWC.

Steps (FLAM_SPEC §2): STFT power via rfft (1024/480, periodic Hann, centred, reflect
padding), Slaney mel (64 bins, 50-14000 Hz), 10*log10(max(x, 1e-10)), BatchNorm over the
mel bins (``bn0``), frequency-only SpecAugment in training, the PyTorch-exact bicubic
time stretch to 1024 frames and the chunk-major fold to 256x256.

The constant matrices (Hann window, mel filterbank, bicubic stretch) are computed here in
numpy; librosa and torch are only used by the tests to check them.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from flam_jax.errors import InputError
from flam_jax.timeline import SAMPLE_RATE, WINDOW_SAMPLES

N_FFT = 1024
HOP = 480
N_MELS = 64
F_MIN = 50.0
F_MAX = 14_000.0
AMIN = 1e-10  # floor of the power before the log
TIME_FRAMES = 1024  # every clip's STFT frames are stretched to this many
SPEC_SIZE = 256  # the folded image is SPEC_SIZE x SPEC_SIZE
MAX_SAMPLES = WINDOW_SAMPLES  # 10 s; longer audio must be windowed by the caller
MIN_SAMPLES = N_FFT // 2 + 1  # reflect padding by N_FFT/2 needs a longer signal
BN_EPS = 1e-5
BN_MOMENTUM = 0.1  # PyTorch convention: new = (1 - m) * old + m * batch
SPEC_AUG_STRIPES = 2
SPEC_AUG_MAX_WIDTH = 8  # stripe width ~ U{0..7}, as torchlibrosa's randint(0, 8)


def num_stft_frames(num_samples: int) -> int:
    """STFT frames of a centred STFT: floor(n / hop) + 1."""
    return num_samples // HOP + 1


# ----------------------------------------------------------------------------- constants


@functools.cache
def hann_window(size: int = N_FFT) -> np.ndarray:
    """Periodic Hann window (the DFT-even one used for spectral analysis), float32."""
    n = np.arange(size, dtype=np.float64)
    return (0.5 - 0.5 * np.cos(2.0 * np.pi * n / size)).astype(np.float32)


def dft_kernels(size: int = N_FFT) -> tuple[np.ndarray, np.ndarray]:
    """Windowed DFT rows (real, imaginary), each (size//2+1, size), float64.

    These are what a convolutional STFT stores as frozen kernels; the converter compares
    a checkpoint's kernels against them. The forward pass itself uses an FFT.
    """
    k = np.arange(size // 2 + 1, dtype=np.float64)[:, None]
    n = np.arange(size, dtype=np.float64)[None, :]
    # Reduce k*n modulo size first so the angle stays exact for large products.
    angle = 2.0 * np.pi * np.mod(k * n, size) / size
    window = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(size) / size)
    return np.cos(angle) * window, -np.sin(angle) * window


def _hz_to_mel_slaney(freq: np.ndarray) -> np.ndarray:
    # Linear below 1 kHz (3 mels per 200 Hz), logarithmic above.
    freq = np.asarray(freq, dtype=np.float64)
    mels = freq / (200.0 / 3.0)
    log_step = np.log(6.4) / 27.0
    above = freq >= 1000.0
    return np.where(above, 15.0 + np.log(np.maximum(freq, 1e-12) / 1000.0) / log_step, mels)


def _mel_to_hz_slaney(mels: np.ndarray) -> np.ndarray:
    mels = np.asarray(mels, dtype=np.float64)
    log_step = np.log(6.4) / 27.0
    above = mels >= 15.0
    return np.where(above, 1000.0 * np.exp(log_step * (mels - 15.0)), mels * (200.0 / 3.0))


@functools.cache
def mel_matrix(
    sample_rate: int = SAMPLE_RATE,
    n_fft: int = N_FFT,
    n_mels: int = N_MELS,
    f_min: float = F_MIN,
    f_max: float = F_MAX,
) -> np.ndarray:
    """Slaney-scale, Slaney-normalised triangular filterbank as (n_fft//2+1, n_mels) float32.

    Used as ``power @ mel_matrix()``. The rounding follows librosa's defaults (triangles
    stored in float32, then scaled by the float64 area normalisation).
    """
    fft_freqs = np.linspace(0.0, sample_rate / 2.0, n_fft // 2 + 1)
    edges = _mel_to_hz_slaney(np.linspace(_hz_to_mel_slaney(f_min), _hz_to_mel_slaney(f_max), n_mels + 2))
    widths = np.diff(edges)
    ramps = edges[:, None] - fft_freqs[None, :]
    rising = -ramps[:-2] / widths[:-1, None]
    falling = ramps[2:] / widths[1:, None]
    triangles = np.maximum(0.0, np.minimum(rising, falling)).astype(np.float32)
    area_norm = 2.0 / (edges[2:] - edges[:-2])
    return (triangles * area_norm[:, None]).astype(np.float32).T.copy()


def _cubic_weights(t: np.ndarray, a: float) -> np.ndarray:
    """Keys' cubic convolution weights for taps at offsets -1, 0, 1, 2 (float32 math)."""
    a = np.float32(a)
    one, two = np.float32(1.0), np.float32(2.0)

    def near(x):  # |x| <= 1
        return ((a + two) * x - (a + np.float32(3.0))) * x * x + one

    def far(x):  # 1 < |x| < 2
        return ((a * x - np.float32(5.0) * a) * x + np.float32(8.0) * a) * x - np.float32(4.0) * a

    return np.stack([far(t + one), near(t), near(one - t), far(two - t)], axis=-1)


@functools.cache
def bicubic_stretch_matrix(in_frames: int, out_frames: int = TIME_FRAMES) -> np.ndarray:
    """(out_frames, in_frames) float32 matrix M with M @ x == PyTorch's 1-D bicubic resize.

    Matches ``interpolate(mode="bicubic", align_corners=True)`` along one axis: source
    position i*(in-1)/(out-1), a = -0.75, taps clamped to [0, in-1]. Positions and weights
    are computed in float32 like PyTorch's CPU kernel.
    """
    if not 1 <= in_frames <= out_frames:
        raise InputError(
            f"cannot stretch {in_frames} STFT frames to {out_frames}: the input must have "
            f"1..{out_frames} frames (at most {MAX_SAMPLES} samples)"
        )
    scale = np.float32(in_frames - 1) / np.float32(out_frames - 1) if out_frames > 1 else np.float32(0)
    position = scale * np.arange(out_frames, dtype=np.float32)
    base = np.minimum(np.floor(position).astype(np.int64), in_frames - 1)
    frac = np.clip(position - base.astype(np.float32), np.float32(0), np.float32(1))
    weights = _cubic_weights(frac, -0.75)
    taps = np.clip(base[:, None] + np.arange(-1, 3)[None, :], 0, in_frames - 1)
    matrix = np.zeros((out_frames, in_frames), np.float64)
    rows = np.repeat(np.arange(out_frames), 4)
    np.add.at(matrix, (rows, taps.ravel()), weights.ravel().astype(np.float64))
    return matrix.astype(np.float32)


# ----------------------------------------------------------------------------- validation


def validate_waveform(wave) -> None:
    """Raise a one-line InputError unless ``wave`` is a (B, N) float batch, 513 <= N <= 480000.

    Shape and dtype are always checked; NaN/inf only when the values are concrete
    (under ``jit`` they are tracers, so callers check before jitting).
    """
    shape = getattr(wave, "shape", None)
    dtype = getattr(wave, "dtype", None)
    if shape is None or dtype is None:
        raise InputError(f"waveform must be an array, got {type(wave).__name__}")
    if len(shape) != 2:
        raise InputError(f"waveform must have shape (batch, samples), got rank {len(shape)} {tuple(shape)}")
    if not jnp.issubdtype(dtype, jnp.floating):
        raise InputError(f"waveform must be floating point (float32 in [-1, 1]), got dtype {dtype}")
    batch, samples = shape
    if batch < 1:
        raise InputError("waveform batch is empty")
    if samples > MAX_SAMPLES:
        raise InputError(
            f"waveform has {samples} samples, longer than 10 s ({MAX_SAMPLES} at {SAMPLE_RATE} Hz); "
            "window long audio first"
        )
    if samples < MIN_SAMPLES:
        if batch >= MIN_SAMPLES:  # (480000, 2) is a stereo clip, not 480000 clips of 2 samples
            raise InputError(
                f"waveform has shape {tuple(shape)}, which looks like [samples, channels]: pass mono "
                "audio as [samples] (e.g. wave.mean(axis=1)) or a batch of clips as [B, samples]"
            )
        raise InputError(f"waveform has {samples} samples, shorter than the minimum {MIN_SAMPLES}")
    try:
        values = np.asarray(wave)
    except jax.errors.TracerArrayConversionError:
        return  # traced under jit: values unknown until run time
    if not bool(np.isfinite(values).all()):
        raise InputError("waveform contains NaN or infinite samples")


# ----------------------------------------------------------------------------- pure steps


def power_spectrogram(wave: jax.Array) -> jax.Array:
    """(B, N) -> (B, T, 513) STFT power, T = N // 480 + 1, float32."""
    wave = wave.astype(jnp.float32)
    batch, samples = wave.shape
    frames = num_stft_frames(samples)
    padded = jnp.pad(wave, ((0, 0), (N_FFT // 2, N_FFT // 2)), mode="reflect")
    # A 1024-sample frame starting at t*480 is hop-chunks t and t+1 plus the first 64
    # samples of chunk t+2: slicing reshaped chunks avoids a gather.
    full_hops, rest = divmod(N_FFT, HOP)
    chunks_needed = frames + full_hops
    padded = jnp.pad(padded, ((0, 0), (0, chunks_needed * HOP - padded.shape[1])))
    chunks = padded.reshape(batch, chunks_needed, HOP)
    pieces = [chunks[:, j : j + frames] for j in range(full_hops)]
    pieces.append(chunks[:, full_hops : full_hops + frames, :rest])
    framed = jnp.concatenate(pieces, axis=-1)
    spectrum = jnp.fft.rfft(framed * jnp.asarray(hann_window()), n=N_FFT, axis=-1)
    return jnp.real(spectrum) ** 2 + jnp.imag(spectrum) ** 2


def log_mel(wave: jax.Array) -> jax.Array:
    """(B, N) -> (B, T, 64) log-mel in dB (reference power 1, floor 1e-10), before bn0."""
    power = power_spectrogram(wave)
    mel = jnp.matmul(power, jnp.asarray(mel_matrix()), precision=jax.lax.Precision.HIGHEST)
    return 10.0 * jnp.log10(jnp.maximum(mel, AMIN))


def freq_mask(key: jax.Array, batch: int, bins: int = N_MELS) -> jax.Array:
    """(B, bins) bool: True where SpecAugment zeroes a mel bin (2 stripes, width U{0..7})."""
    width_key, start_key = jax.random.split(key)
    shape = (batch, SPEC_AUG_STRIPES)
    widths = jax.random.randint(width_key, shape, 0, SPEC_AUG_MAX_WIDTH)
    starts = jax.random.randint(start_key, shape, 0, bins - widths)
    index = jnp.arange(bins)[None, None, :]
    inside = (index >= starts[..., None]) & (index < (starts + widths)[..., None])
    return inside.any(axis=1)


def stretch_time(mel: jax.Array, out_frames: int = TIME_FRAMES) -> jax.Array:
    """(B, T, F) -> (B, out_frames, F) with the PyTorch-exact bicubic stretch."""
    matrix = jnp.asarray(bicubic_stretch_matrix(mel.shape[1], out_frames))
    return jnp.einsum("ot,btf->bof", matrix, mel, precision=jax.lax.Precision.HIGHEST)


def fold_to_image(mel: jax.Array, spec_size: int = SPEC_SIZE) -> jax.Array:
    """(B, chunks*spec_size, F) -> (B, chunks*F, spec_size, 1) NHWC, chunk-major rows.

    image[row, col] = mel[time = (row // F) * spec_size + col, bin = row % F].
    """
    batch, frames, bins = mel.shape
    chunks = frames // spec_size
    x = mel.reshape(batch, chunks, spec_size, bins)
    x = jnp.transpose(x, (0, 1, 3, 2))  # (B, chunk, bin, col)
    return x.reshape(batch, chunks * bins, spec_size, 1)


# ----------------------------------------------------------------------------- module


class MelBatchNorm(nnx.Module):
    """bn0: BatchNorm over the mel bins with PyTorch's statistics conventions.

    Training normalises with the biased batch variance and updates the running variance
    with the unbiased one (as ``torch.nn.BatchNorm2d``); eval uses the running statistics.
    """

    def __init__(self, num_bins: int = N_MELS):
        self.scale = nnx.Param(jnp.ones((num_bins,), jnp.float32))
        self.bias = nnx.Param(jnp.zeros((num_bins,), jnp.float32))
        self.mean = nnx.BatchStat(jnp.zeros((num_bins,), jnp.float32))
        self.var = nnx.BatchStat(jnp.ones((num_bins,), jnp.float32))

    def __call__(self, x: jax.Array, *, train: bool, mask: jax.Array | None = None) -> jax.Array:
        """x: (B, T, bins). ``mask`` (B,) bool leaves padded examples out of the batch stats."""
        if train:
            weight = jnp.ones(x.shape[:2], x.dtype)
            if mask is not None:
                weight = weight * mask.astype(x.dtype)[:, None]
            count = jnp.maximum(weight.sum(), 2.0)
            mean = jnp.einsum("bt,btf->f", weight, x) / count
            var = jnp.einsum("bt,btf->f", weight, (x - mean) ** 2) / count
            unbiased = var * count / (count - 1.0)
            self.mean[...] = (1 - BN_MOMENTUM) * self.mean[...] + BN_MOMENTUM * mean
            self.var[...] = (1 - BN_MOMENTUM) * self.var[...] + BN_MOMENTUM * unbiased
        else:
            mean, var = self.mean[...], self.var[...]
        return (x - mean) * jax.lax.rsqrt(var + BN_EPS) * self.scale[...] + self.bias[...]


class LogMelFrontend(nnx.Module):
    """Waveform (B, N<=480000) -> (B, 256, 256, 1) image; holds bn0 and the SpecAugment rng."""

    def __init__(self, *, rngs: nnx.Rngs):
        self.bn0 = MelBatchNorm(N_MELS)
        # SpecAugment draws from the "dropout" stream (falls back to "default").
        self.rngs = rngs["dropout"].fork()

    def __call__(self, wave: jax.Array, *, train: bool = False, mask: jax.Array | None = None) -> jax.Array:
        validate_waveform(wave)
        mel = self.bn0(log_mel(wave), train=train, mask=mask)
        if train:
            dropped = freq_mask(self.rngs(), mel.shape[0], mel.shape[-1])
            mel = jnp.where(dropped[:, None, :], 0.0, mel)
        return fold_to_image(stretch_time(mel))
