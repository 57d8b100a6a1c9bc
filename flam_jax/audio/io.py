"""Decoding audio files to 48 kHz mono float32, FLAC encoding, and A-weighted loudness.

Everything the data pipeline reads goes through ``load_audio`` (a path), ``decode_audio``
(bytes) or ``decode_span`` (part of the bytes), so a corrupt file always surfaces as one
``AudioDecodeError`` naming its source, never as a decoder traceback deep inside a worker.

48 kHz mono FLAC, what the builders store, takes a fast path: dr_flac (the C decoder
inside ``miniaudio``, pinned) seeks to the span and decodes only it, about twice as fast
per sample as libFLAC (10 s: 1.7 ms instead of 3.4 ms for an event recording here; a
10 s crop of a 60 s file: 3.5 ms instead of 6.0 ms through libsndfile's seek), with
exactly the samples libsndfile gives (16-bit / 32768). Anything else goes through
libsndfile and soxr.
"""

import functools
import io
import os
import re

import numpy as np
import soundfile
import soxr
from miniaudio import ffi as _ffi
from miniaudio import lib as _dr_flac

from flam_jax import paths
from flam_jax.errors import AudioDecodeError
from flam_jax.timeline import SAMPLE_RATE

# -inf dB is useless for comparisons; this floor is far below any threshold we use.
SILENCE_DB = -200.0
_BUFFER_NAME = re.compile(r"<_io\.BytesIO object at 0x[0-9a-f]+>")


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
        reason = _BUFFER_NAME.sub("it", str(err))  # "Error opening <_io.BytesIO ...>" names nothing
        raise AudioDecodeError(f"cannot decode audio file {source}: {reason}") from err
    return _to_mono_48k(data, rate, source, target_rate)


def load_audio(path: str, *, target_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Decode WAV/FLAC/OGG/MP3 (anything libsndfile reads) to mono float32 at ``target_rate``;
    ``path`` may be remote (``gs://``: read whole, then decoded from memory)."""
    path = os.fspath(path)
    if paths.is_remote(path):
        if not paths.isfile(path):
            raise AudioDecodeError(f"audio file not found: {path}")
        return _read(io.BytesIO(paths.read_bytes(path)), path, target_rate)
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
    wave = _flac_span(data, start, length, source)
    if wave is None:  # another format, rate or channel count: decode it whole
        wave = _read(io.BytesIO(data), source, SAMPLE_RATE)
        wave = wave[start : None if length is None else start + length]
    return wave


def _flac_span(data: bytes, start: int, length: int | None, source: str) -> np.ndarray | None:
    """dr_flac (miniaudio's C library, through its cffi handle) seeks to ``start`` and
    decodes only the span, straight into float32; None unless ``data`` is 48 kHz mono FLAC."""
    if not data.startswith(b"fLaC"):
        return None
    handle = _dr_flac.ma_dr_flac_open_memory(_ffi.from_buffer(data), len(data), _ffi.NULL)
    if handle == _ffi.NULL:
        return None  # libsndfile then says what is wrong with it
    try:
        total = int(handle.totalPCMFrameCount)
        if handle.sampleRate != SAMPLE_RATE or handle.channels != 1 or total == 0:
            return None
        start = min(max(int(start), 0), total)
        count = total - start if length is None else min(int(length), total - start)
        if start and not _dr_flac.ma_dr_flac_seek_to_pcm_frame(handle, start):
            raise AudioDecodeError(
                f"audio file {source} is truncated or corrupt: cannot seek to sample {start}"
            )
        wave = np.empty(count, dtype=np.float32)
        got = _dr_flac.ma_dr_flac_read_pcm_frames_f32(
            handle, count, _ffi.cast("float *", _ffi.from_buffer(wave))
        )
    finally:
        _dr_flac.ma_dr_flac_close(handle)
    if got != count:
        raise AudioDecodeError(f"audio file {source} is truncated: {start + got} of {total} samples")
    return wave


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
    # Imported here: scipy.signal takes ~2 s to import and only A-weighting needs it, not
    # the inference commands that import this module.
    from scipy import signal

    z, p, k = signal.bilinear_zpk(zeros, poles, 1.0, rate)
    sos = signal.zpk2sos(z, p, k)
    _, response = signal.sosfreqz(sos, worN=[1000.0], fs=rate)
    sos[0, :3] /= np.abs(response[0])
    return sos


def a_weight(audio: np.ndarray, rate: int = SAMPLE_RATE) -> np.ndarray:
    """Filter a waveform with the A-weighting curve."""
    from scipy import signal  # lazy, as in a_weighting_sos

    return signal.sosfilt(a_weighting_sos(rate), audio).astype(np.float32, copy=False)


def window_levels_db(weighted: np.ndarray, window: int) -> np.ndarray:
    """RMS in dB full scale over consecutive non-overlapping windows; the last, partial
    window is zero-padded, so its power times the window is the energy actually there."""
    count = -(-len(weighted) // window)
    padded = np.zeros(count * window, dtype=np.float32)
    padded[: len(weighted)] = weighted
    blocks = padded.reshape(count, window)
    power = np.einsum("ij,ij->i", blocks, blocks, dtype=np.float64) / window
    return 10.0 * np.log10(np.maximum(power, 10.0 ** (SILENCE_DB / 10.0)))


def a_weighted_levels_db(audio: np.ndarray, *, window: int = 600, rate: int = SAMPLE_RATE) -> np.ndarray:
    """A-weighted RMS level (dBFS) of each ``window``-sample block of ``audio``."""
    return window_levels_db(a_weight(audio, rate), window)


# --------------------------------------------------------------------------- streaming

# Input frames per read: 64 Ki frames is 1.4 s at 48 kHz, small next to the 10 s window the
# reader's consumer holds, and large enough that per-read overhead does not show.
STREAM_BLOCK_FRAMES = 1 << 16

_DECODE_ERRORS = (soundfile.LibsndfileError, RuntimeError, ValueError, TypeError, EOFError)


class AudioStream:
    """A file decoded block by block to mono float32 at ``target_rate``: ``load_audio`` in
    pieces, for recordings too long to hold in memory.

        with AudioStream(path) as stream:
            for block in stream.blocks():  # 1-D float32 arrays, together load_audio(path)
                ...

    Each block is mixed to mono and, at another rate, resampled by one soxr stream (HQ, as
    ``load_audio``); soxr's stream gives the one-shot resampler's samples (checked equal in
    tests/test_infer_streaming.py). A ``gs://`` file is read through ``paths.open_remote``:
    fetched whole up to 64 MiB, streamed through the path layer's file object beyond.
    Errors are ``load_audio``'s, word for word: a missing file, one libsndfile cannot open
    or read (truncated FLAC fails mid-stream), no samples, non-finite samples, each one
    ``AudioDecodeError`` naming the file.
    """

    def __init__(self, path, *, target_rate: int = SAMPLE_RATE, block_frames: int = STREAM_BLOCK_FRAMES):
        self.source = os.fspath(path)
        self.target_rate = target_rate
        self.block_frames = block_frames
        remote = paths.is_remote(self.source)
        if not (paths.isfile(self.source) if remote else os.path.isfile(self.source)):
            raise AudioDecodeError(f"audio file not found: {self.source}")
        self._raw = paths.open_remote(self.source) if remote else None
        try:
            self._file = soundfile.SoundFile(self._raw if remote else self.source)
        except _DECODE_ERRORS as err:
            # "Error opening <gcsfs.core.GCSFile ...>" names an object, not the file: say "it".
            reason = str(err) if self._raw is None else str(err).replace(repr(self._raw), "it")
            self._close_raw()
            raise AudioDecodeError(f"cannot decode audio file {self.source}: {reason}") from err
        self.rate = self._file.samplerate
        self.channels = self._file.channels

    @property
    def expected_samples(self) -> int:
        """The length at ``target_rate`` from the header: a sizing hint, not a promise
        (a truncated file delivers fewer samples, and the resampler rounds its last one)."""
        frames = self._file.frames
        if not 0 <= frames < 1 << 40:  # libsndfile's "unknown length" is SF_COUNT_MAX
            return 0
        return -(-frames * self.target_rate // self.rate)

    def blocks(self):
        """Yield the decoded samples in order, as 1-D float32 blocks (none of them empty)."""
        resampler = None
        if self.rate != self.target_rate:
            resampler = soxr.ResampleStream(self.rate, self.target_rate, 1, dtype="float32", quality="HQ")
        decoded = 0
        while True:
            try:
                data = self._file.read(self.block_frames, dtype="float32", always_2d=True)
            except _DECODE_ERRORS as err:
                raise AudioDecodeError(f"cannot decode audio file {self.source}: {err}") from err
            if data.shape[0] == 0:
                break
            decoded += data.shape[0]
            # The same float32 mean as load_audio's, row by row, so blocks change no sample.
            mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
            if not np.all(np.isfinite(mono)):
                raise AudioDecodeError(f"audio file {self.source} holds non-finite samples")
            out = mono if resampler is None else resampler.resample_chunk(mono, last=False)
            if out.size:
                yield np.ascontiguousarray(out, dtype=np.float32)
        if decoded == 0:
            raise AudioDecodeError(f"audio file {self.source} holds no samples")
        if resampler is not None:
            # The resampler holds back its filter's delay until told the stream has ended.
            tail = resampler.resample_chunk(np.zeros(0, np.float32), last=True)
            if tail.size:
                yield np.ascontiguousarray(tail, dtype=np.float32)

    def _close_raw(self) -> None:
        if self._raw is not None:
            self._raw.close()
            self._raw = None

    def close(self) -> None:
        self._file.close()
        self._close_raw()

    def __enter__(self) -> "AudioStream":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
