"""Decoding audio files to 48 kHz mono float32, FLAC encoding, and A-weighted loudness.

Everything the data pipeline reads goes through ``load_audio`` (a path), ``decode_audio``
(bytes) or ``decode_span`` (part of the bytes), so a corrupt file always surfaces as one
``AudioDecodeError`` naming its source, never as a decoder traceback deep inside a worker.

48 kHz mono FLAC, what the builders store, takes a fast path: dr_flac (``miniaudio``)
decodes a whole file about twice as fast as libFLAC (3.4 ms instead of 6.1 ms for 10 s
here), and libFLAC (``soundfile``) seeks when only a short span of a long file is
needed. Both give exactly the samples libsndfile gives (16-bit / 32768).
"""

import functools
import io
import os

import miniaudio
import numpy as np
import soundfile
import soxr
from scipy import signal

from flam_jax.errors import AudioDecodeError

SAMPLE_RATE = 48_000
# -inf dB is useless for comparisons; this floor is far below any threshold we use.
SILENCE_DB = -200.0


def _to_mono_48k(data: np.ndarray, rate: int, source: str, target_rate: int) -> np.ndarray:
    if data.ndim == 2:
        data = data.mean(axis=1)
    if data.size == 0:
        raise AudioDecodeError(f"audio file {source} holds no samples")
    if not np.all(np.isfinite(data)):
        raise AudioDecodeError(f"audio file {source} holds non-finite samples")
    if rate != target_rate:
        data = soxr.resample(data, rate, target_rate, quality="HQ")
    return np.ascontiguousarray(data, dtype=np.float32)


def _read(file_like, source: str, target_rate: int) -> np.ndarray:
    try:
        data, rate = soundfile.read(file_like, dtype="float32", always_2d=False)
    except (soundfile.LibsndfileError, RuntimeError, ValueError, TypeError, EOFError) as err:
        raise AudioDecodeError(f"cannot decode audio file {source}: {err}") from err
    return _to_mono_48k(data, rate, source, target_rate)


def load_audio(path: str, *, target_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Decode WAV/FLAC/OGG/MP3 (anything libsndfile reads) to mono float32 at ``target_rate``."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise AudioDecodeError(f"audio file not found: {path}")
    return _read(path, path, target_rate)


def decode_audio(data: bytes, *, source: str = "<bytes>", target_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Decode an encoded file held in memory; ``source`` names it in errors."""
    if not data:
        raise AudioDecodeError(f"audio record {source} is empty")
    if target_rate == SAMPLE_RATE:
        return decode_span(data, source=source)
    return _read(io.BytesIO(data), source, target_rate)


def decode_span(
    data: bytes, start: int = 0, length: int | None = None, *, source: str = "<bytes>"
) -> np.ndarray:
    """Samples ``[start, start + length)`` (to the end when ``length`` is None) of an
    encoded file, as mono float32 at 48 kHz; a span past the end is cut at the end."""
    if not data:
        raise AudioDecodeError(f"audio record {source} is empty")
    info = _flac_info(data)
    if info is None:  # another format or rate: decode it whole
        wave = _read(io.BytesIO(data), source, SAMPLE_RATE)
        return wave[start : None if length is None else start + length]
    total = info.num_frames
    start = min(max(int(start), 0), total)
    stop = total if length is None else min(start + int(length), total)
    if 2 * (stop - start) >= total:  # most of the file: one fast whole-file decode
        try:
            decoded = miniaudio.flac_read_s16(data)
        except miniaudio.MiniaudioError as err:
            raise AudioDecodeError(f"cannot decode audio file {source}: {err}") from err
        samples = np.frombuffer(decoded.samples, dtype=np.int16)
        if len(samples) != total:
            raise AudioDecodeError(f"audio file {source} is truncated: {len(samples)} of {total} samples")
        return samples[start:stop].astype(np.float32) * np.float32(1 / 32768)
    try:
        with soundfile.SoundFile(io.BytesIO(data)) as f:
            f.seek(start)
            wave = f.read(stop - start, dtype="float32")
    except (soundfile.LibsndfileError, RuntimeError, ValueError, TypeError, EOFError) as err:
        raise AudioDecodeError(f"cannot decode audio file {source}: {err}") from err
    if len(wave) != stop - start:
        raise AudioDecodeError(f"audio file {source} is truncated: {start + len(wave)} of {total} samples")
    return wave


def _flac_info(data: bytes):
    """STREAMINFO of a 48 kHz mono FLAC with a known length, else None."""
    if not data.startswith(b"fLaC"):
        return None
    try:
        info = miniaudio.flac_get_info(data)
    except miniaudio.MiniaudioError:
        return None  # let libsndfile say what is wrong with it
    if info.sample_rate != SAMPLE_RATE or info.nchannels != 1 or info.num_frames <= 0:
        return None
    return info


def encode_flac(audio: np.ndarray, *, rate: int = SAMPLE_RATE) -> bytes:
    """Mono float32 -> 16-bit FLAC bytes (clipped to [-1, 1])."""
    buffer = io.BytesIO()
    clipped = np.clip(np.asarray(audio, dtype=np.float32), -1.0, 1.0)
    soundfile.write(buffer, clipped, rate, format="FLAC", subtype="PCM_16")
    return buffer.getvalue()


@functools.lru_cache(maxsize=8)
def a_weighting_sos(rate: int = SAMPLE_RATE) -> np.ndarray:
    """IEC 61672 A-weighting as a digital filter (bilinear transform), 0 dB at 1 kHz."""
    f1, f2, f3, f4 = 20.598997, 107.65265, 737.86223, 12194.217
    zeros = [0.0, 0.0, 0.0, 0.0]
    poles = [-2 * np.pi * f for f in (f1, f1, f2, f3, f4, f4)]
    z, p, k = signal.bilinear_zpk(zeros, poles, 1.0, rate)
    sos = signal.zpk2sos(z, p, k)
    _, response = signal.sosfreqz(sos, worN=[1000.0], fs=rate)
    sos[0, :3] /= np.abs(response[0])
    return sos


def a_weight(audio: np.ndarray, rate: int = SAMPLE_RATE) -> np.ndarray:
    """Filter a waveform with the A-weighting curve."""
    return signal.sosfilt(a_weighting_sos(rate), audio).astype(np.float32, copy=False)


def window_levels_db(weighted: np.ndarray, window: int) -> np.ndarray:
    """RMS in dB full scale over consecutive non-overlapping windows (the tail is dropped)."""
    n = len(weighted) // window
    blocks = weighted[: n * window].reshape(n, window).astype(np.float64)
    power = np.einsum("ij,ij->i", blocks, blocks) / window
    return 10.0 * np.log10(np.maximum(power, 10.0 ** (SILENCE_DB / 10.0)))


def a_weighted_levels_db(audio: np.ndarray, *, window: int = 600, rate: int = SAMPLE_RATE) -> np.ndarray:
    """A-weighted RMS level (dBFS) of each ``window``-sample block of ``audio``."""
    return window_levels_db(a_weight(audio, rate), window)
