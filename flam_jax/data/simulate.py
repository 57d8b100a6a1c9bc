"""The FLAM mixture simulator: one 10 s, 48 kHz mixture with exact frame labels per event.

A mixture is a deterministic function of (pool, seed, index): ``simulate_index`` seeds a
numpy Generator from (seed, index) and ``simulate`` draws everything from it (the Grain
pipeline passes its own per-element Generator to ``simulate`` instead). The recipe is
FLAM_SPEC section 8; every choice the spec leaves open is a field of ``SimulatorConfig``
and is listed in WORKSPACE.md "Spec decisions".

Labels come from the audio, not from the placement: an event's A-weighted RMS is taken
over 12.5 ms windows of the event as it sounds in the final mixture; windows below
``inactive_db`` are inactive, and a 0.3125 s frame is positive when at least
``min_overlap`` of its windows are active.
"""

import dataclasses
import threading
from collections.abc import Sequence

import numpy as np
from scipy import signal

from flam_jax.audio import io as audio_io
from flam_jax.errors import AudioDecodeError, DataError

BACKGROUND_TAGS = ("ambiance", "ambience")


@dataclasses.dataclass(frozen=True)
class SimulatorConfig:
    sample_rate: int = audio_io.SAMPLE_RATE
    num_samples: int = 480_000  # 10 s
    frames: int = 32  # label frames per mixture (3.2 Hz)
    window: int = 600  # activity window in samples: 12.5 ms, 25 per frame
    min_events: int = 1
    max_events: int = 10
    max_overlap: int = 3  # events sounding at once (placed spans, window resolution)
    fragment_prob: float = 0.1
    repeat_prob: float = 0.1
    pieces: tuple[int, int] = (2, 3)  # fragments or repetitions, inclusive range
    gap_s: tuple[float, float] = (0.2, 1.5)  # silence between fragments / repetitions
    event_db: tuple[float, float] = (6.0, 30.0)  # event level above the background
    background_db: float = -40.0  # A-weighted RMS (dBFS) the background is scaled to
    loud_part_db: float = 40.0  # event loudness = RMS over windows within this of its loudest
    fade_s: float = 0.01
    crossfade_s: float = 0.25  # when a short background is looped
    max_event_s: float = 8.0  # longer event clips are cropped at random to this length
    inactive_db: float = -70.0
    min_overlap: float = 0.5  # fraction of a frame's windows that must be active
    placement_tries: int = 20
    decode_retries: int = 3  # other clips tried when a clip fails to decode
    peak_limit: float = 0.99  # mixtures above this peak are scaled down as a whole

    def __post_init__(self):
        per_frame = self.num_samples // self.frames
        if self.num_samples % self.frames or per_frame % self.window:
            raise DataError(
                f"simulator: window {self.window} must divide the frame length "
                f"{self.num_samples}/{self.frames} samples"
            )
        if not 1 <= self.min_events <= self.max_events:
            raise DataError("simulator: need 1 <= min_events <= max_events")
        if self.max_overlap < 1:
            raise DataError("simulator: max_overlap must be >= 1")

    @property
    def windows(self) -> int:
        return self.num_samples // self.window

    @property
    def windows_per_frame(self) -> int:
        return self.windows // self.frames


@dataclasses.dataclass
class Mixture:
    audio: np.ndarray  # [num_samples] float32
    captions: list[str]  # one per placed event
    labels: np.ndarray  # [events, frames] uint8
    spans: list[list[tuple[int, int]]]  # per event, the (start, end) samples of its pieces
    sources: list[str]  # per event, the clip it came from
    background: str  # the background clip, or "noise"
    decode_errors: list[str] = dataclasses.field(default_factory=list)  # sources that failed
    # Per event, every caption of its clip ("a cymbal", "a hi-hat cymbal"): each one is a
    # true description of those frames. Empty: only ``captions`` are known.
    synonyms: list[tuple[str, ...]] = dataclasses.field(default_factory=list)

    def event_captions(self, k: int) -> tuple[str, ...]:
        """Every caption that is true of event ``k`` (its drawn caption first)."""
        extra = self.synonyms[k] if self.synonyms else ()
        return (self.captions[k], *(c for c in extra if c != self.captions[k]))


@dataclasses.dataclass
class Clip:
    """One source clip held in memory (48 kHz mono float32)."""

    audio: np.ndarray
    captions: Sequence[str]
    tags: Sequence[str] = ()
    name: str = ""


def is_background(tags: Sequence[str]) -> bool:
    return any(t.strip().lower() in BACKGROUND_TAGS for t in tags)


class ClipPool:
    """Random access to source clips for the simulator; subclasses supply ``_load``.

    Decoded audio and each clip's loudness are cached (LRU of ``cache_size`` clips), which
    matters because every mixture reads ~6 clips.
    """

    def __init__(self, captions, tags, names, cache_size: int = 256):
        self._captions = [list(c) for c in captions]
        self._names = list(names)
        flags = np.array([is_background(t) for t in tags], dtype=bool)
        self.background_indices = np.flatnonzero(flags)
        self.event_indices = np.flatnonzero(~flags)
        self._background_set = frozenset(self.background_indices.tolist())
        self._cache: dict[int, tuple[np.ndarray, np.ndarray, float]] = {}
        self._lock: threading.Lock | None = None
        self._cache_size = cache_size

    def __len__(self) -> int:
        return len(self._captions)

    def captions(self, index: int) -> list[str]:
        return self._captions[index]

    def name(self, index: int) -> str:
        return self._names[index]

    def is_background(self, index: int) -> bool:
        return index in self._background_set

    def _load(self, index: int) -> np.ndarray:
        raise NotImplementedError

    def audio(self, index: int) -> tuple[np.ndarray, float]:
        """(waveform, A-weighted RMS in dBFS over the whole clip); AudioDecodeError if corrupt."""
        wave, _, level = self.clip(index)
        return wave, level

    def clip(self, index: int) -> tuple[np.ndarray, np.ndarray, float]:
        """(waveform, its A-weighted version, A-weighted level in dBFS), cached (LRU)."""
        with self._guard():
            hit = self._cache.pop(index, None)
            if hit is not None:
                self._cache[index] = hit
                return hit
        wave = self._load(index)
        if wave.size == 0:
            raise AudioDecodeError(f"audio record {self.name(index)} holds no samples")
        weighted = audio_io.a_weight(wave)
        hit = (wave, weighted, loudness_db(weighted))
        with self._guard():
            while self._cache and len(self._cache) >= self._cache_size:
                self._cache.pop(next(iter(self._cache)))
            if self._cache_size > 0:
                self._cache[index] = hit
        return hit

    def _guard(self) -> threading.Lock:
        # Grain maps elements on several threads; the lock is rebuilt after pickling.
        if self._lock is None:
            self._lock = threading.Lock()
        return self._lock

    def __getstate__(self):
        return {**self.__dict__, "_lock": None, "_cache": {}}  # workers start with an empty cache


class InMemoryPool(ClipPool):
    def __init__(self, clips: Sequence[Clip], cache_size: int = 1 << 30):
        super().__init__(
            [c.captions for c in clips], [c.tags for c in clips], [c.name for c in clips], cache_size
        )
        self._clips = list(clips)

    def _load(self, index: int) -> np.ndarray:
        return np.asarray(self._clips[index].audio, dtype=np.float32)


def loudness_db(weighted: np.ndarray) -> float:
    power = float(np.mean(np.square(weighted, dtype=np.float64))) if weighted.size else 0.0
    return 10.0 * np.log10(max(power, 10.0 ** (audio_io.SILENCE_DB / 10)))


def _window_power(weighted: np.ndarray, start: int, window: int) -> tuple[int, np.ndarray]:
    """Mean power of ``weighted`` placed at sample ``start``, per mixture-grid window."""
    first = start // window
    pad = start - first * window
    count = -(-(pad + len(weighted)) // window)
    buffer = np.zeros(count * window, dtype=np.float32)
    buffer[pad : pad + len(weighted)] = weighted
    blocks = buffer.reshape(count, window)
    return first, np.einsum("ij,ij->i", blocks, blocks).astype(np.float64) / window


def _fade(piece: np.ndarray, fade: int) -> np.ndarray:
    """A faded copy of ``piece`` (linear ramps of ``fade`` samples at both ends)."""
    piece = np.array(piece, dtype=np.float32)
    n = min(fade, len(piece) // 2)
    if n > 0:
        ramp = np.linspace(0.0, 1.0, n, endpoint=False, dtype=np.float32)
        piece[:n] *= ramp
        piece[len(piece) - n :] *= ramp[::-1]
    return piece


def loop_to_length(wave: np.ndarray, length: int, crossfade: int) -> np.ndarray:
    """Repeat ``wave`` to ``length`` samples, joining copies with a linear crossfade."""
    if len(wave) >= length:
        return wave[:length]
    crossfade = min(crossfade, len(wave) // 2)
    period = len(wave) - crossfade
    # Copy k >= 1 starts at k * period: its first ``crossfade`` samples blend into the
    # previous copy's tail, so every later period is the same blended cycle.
    ramp = np.linspace(0.0, 1.0, crossfade, dtype=np.float32)
    blend = wave[:crossfade] * ramp + wave[period:] * (1.0 - ramp)
    cycle = np.concatenate([blend, wave[crossfade:period]])
    repeats = -(-(length - period) // period)
    return np.concatenate([wave[:period], np.tile(cycle, repeats)])[:length].astype(np.float32, copy=False)


def coloured_noise(rng: np.random.Generator, length: int, rate: int) -> np.ndarray:
    """Gaussian noise with a 1/f^beta spectrum, beta ~ U(0, 2) (white to brown)."""
    beta = rng.uniform(0.0, 2.0)
    size = 1 << int(np.ceil(np.log2(length)))
    spectrum = rng.standard_normal(size // 2 + 1) + 1j * rng.standard_normal(size // 2 + 1)
    freqs = np.fft.rfftfreq(size, 1.0 / rate)
    freqs[0] = freqs[1]
    spectrum *= freqs ** (-beta / 2.0)
    return np.fft.irfft(spectrum, size)[:length].astype(np.float32)


@dataclasses.dataclass
class Piece:
    audio: np.ndarray  # faded, unit gain
    weighted: np.ndarray  # A-weighted version of ``audio``
    offset: int  # start relative to the event's onset


def _pieces(segment, mode, rng, cfg: SimulatorConfig) -> list[tuple[int, int, int]]:
    """(source start, source end, offset) of each piece of an event pattern."""
    rate, total = cfg.sample_rate, cfg.num_samples
    if mode == "plain":
        return [(0, len(segment), 0)]
    count = int(rng.integers(cfg.pieces[0], cfg.pieces[1] + 1))
    gaps = (rng.uniform(*cfg.gap_s, size=count - 1) * rate).astype(int)
    if gaps.sum() > total // 2:  # short mixtures: silence may take at most half
        gaps = gaps * (total // 2) // gaps.sum()
    if mode == "repeat":
        length = min(len(segment), (total - int(gaps.sum())) // count)
        offsets = np.concatenate([[0], np.cumsum(gaps + length)])[:count]
        return [(0, length, int(o)) for o in offsets]
    length = min(len(segment), total - int(gaps.sum()))
    cuts = np.sort(rng.integers(1, max(length, count), size=count - 1))
    bounds = np.concatenate([[0], cuts, [length]]).astype(int)
    out, offset = [], 0
    for k in range(count):
        out.append((int(bounds[k]), int(bounds[k + 1]), offset))
        offset += int(bounds[k + 1] - bounds[k]) + (int(gaps[k]) if k < count - 1 else 0)
    return [p for p in out if p[1] > p[0]] or [(0, min(len(segment), total), 0)]


def _event_pieces(segment, weighted_segment, mode, rng, cfg) -> list[Piece]:
    """Faded pieces with their A-weighted versions.

    With ``weighted_segment`` (the cached A-weighted clip) a piece's weighted signal is
    that slice with the same fades, which differs from filtering the faded piece only
    within a few ms of its ends; without it the piece is filtered exactly.
    """
    sos = audio_io.a_weighting_sos(cfg.sample_rate)
    fade = round(cfg.fade_s * cfg.sample_rate)
    out, done = [], {}
    for start, end, offset in _pieces(segment, mode, rng, cfg):
        key = (start, end)
        if key not in done:  # repetitions share one piece
            faded = _fade(segment[start:end], fade)
            if weighted_segment is None:
                weighted = signal.sosfilt(sos, faded).astype(np.float32)
            else:
                weighted = _fade(weighted_segment[start:end], fade)
            done[key] = (faded, weighted)
        out.append(Piece(*done[key], offset))
    return out


def _loud_part_db(pieces: list[Piece], cfg: SimulatorConfig) -> float:
    """A-weighted RMS over the windows within ``loud_part_db`` of the loudest one."""
    powers = np.concatenate([_window_power(p.weighted, 0, cfg.window)[1] for p in pieces])
    floor = powers.max() * 10.0 ** (-cfg.loud_part_db / 10.0)
    loud = powers[powers >= floor]
    return 10.0 * np.log10(max(float(loud.mean()), 10.0 ** (audio_io.SILENCE_DB / 10)))


@dataclasses.dataclass
class PlacedEvent:
    caption: str
    source: str
    pieces: list[Piece]
    onset: int  # samples
    gain: float  # linear amplitude gain
    synonyms: tuple[str, ...] = ()  # every caption of the source clip


def _fits(occupancy, pieces, onset, cfg) -> bool:
    for p in pieces:
        a = (onset + p.offset) // cfg.window
        b = -(-(onset + p.offset + len(p.audio)) // cfg.window)
        if occupancy[a:b].max(initial=0) >= cfg.max_overlap:
            return False
    return True


def _occupy(occupancy, pieces, onset, cfg) -> None:
    for p in pieces:
        a = (onset + p.offset) // cfg.window
        b = -(-(onset + p.offset + len(p.audio)) // cfg.window)
        occupancy[a:b] += 1


def render(
    background: np.ndarray, events: Sequence[PlacedEvent], cfg: SimulatorConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Sum background and events, limit the peak, and derive frame labels from loudness.

    ``background`` is already at its final gain and length. Returns (audio, labels[E, F]).
    """
    mix = background.astype(np.float32, copy=True)
    powers = np.zeros((len(events), cfg.windows), dtype=np.float64)
    for e, event in enumerate(events):
        for p in event.pieces:
            start = event.onset + p.offset
            end = min(start + len(p.audio), cfg.num_samples)
            if end <= start:
                continue
            mix[start:end] += event.gain * p.audio[: end - start]
            first, power = _window_power(p.weighted[: end - start], start, cfg.window)
            stop = min(first + len(power), cfg.windows)
            powers[e, first:stop] += power[: stop - first] * event.gain**2
    peak = float(np.max(np.abs(mix), initial=0.0))
    final_gain = cfg.peak_limit / peak if peak > cfg.peak_limit else 1.0
    mix *= final_gain
    threshold = 10.0 ** (cfg.inactive_db / 10.0) / final_gain**2
    active = powers >= threshold
    fraction = active.reshape(len(events), cfg.frames, cfg.windows_per_frame).mean(axis=2)
    labels = (fraction >= cfg.min_overlap - 1e-9).astype(np.uint8)
    return mix, labels


def _background(pool, rng, cfg, primary, errors) -> tuple[np.ndarray, str]:
    candidates = pool.background_indices if pool is not None else np.zeros(0, int)
    choice = primary if primary is not None and pool.is_background(primary) else None
    for _ in range(cfg.decode_retries + 1):
        if choice is None:
            if len(candidates) == 0:
                break
            choice = int(candidates[rng.integers(len(candidates))])
        try:
            wave, level = pool.audio(choice)
        except AudioDecodeError:
            errors.append(pool.name(choice))
            choice = None
            continue
        if len(wave) > cfg.num_samples:
            start = int(rng.integers(0, len(wave) - cfg.num_samples + 1))
            wave = wave[start : start + cfg.num_samples]
        else:
            wave = loop_to_length(wave, cfg.num_samples, round(cfg.crossfade_s * cfg.sample_rate))
        return _at_level(wave, level, cfg.background_db), pool.name(choice)
    noise = coloured_noise(rng, cfg.num_samples, cfg.sample_rate)
    return _at_level(noise, loudness_db(audio_io.a_weight(noise)), cfg.background_db), "noise"


def _at_level(wave, level_db, target_db) -> np.ndarray:
    gain = 1.0 if level_db <= audio_io.SILENCE_DB + 1 else 10.0 ** ((target_db - level_db) / 20.0)
    return np.multiply(wave, np.float32(gain), dtype=np.float32)


def _draw_events(pool, rng, count, primary) -> list[int]:
    indices = pool.event_indices
    chosen = [primary] if primary is not None and not pool.is_background(primary) else []
    if len(indices) == 0:
        return chosen
    seen = set(chosen)
    while len(chosen) < count:
        index = int(indices[rng.integers(len(indices))])
        if index in seen and len(seen) < len(indices):
            continue
        seen.add(index)
        chosen.append(index)
    return chosen


def simulate(
    pool: ClipPool, rng: np.random.Generator, cfg: SimulatorConfig, primary: int | None = None
) -> Mixture:
    """Simulate one mixture; ``primary`` (an index into ``pool``) is always used.

    A background primary becomes the background, an event primary the first event. Clips
    that fail to decode are replaced by others and listed in ``Mixture.decode_errors``.
    """
    errors: list[str] = []
    background, background_name = _background(pool, rng, cfg, primary, errors)
    count = int(rng.integers(cfg.min_events, cfg.max_events + 1))
    occupancy = np.zeros(cfg.windows, dtype=np.int32)
    placed: list[PlacedEvent] = []
    queue = _draw_events(pool, rng, count, primary)
    retries = 0
    while queue:
        index = queue.pop(0)
        try:
            wave, weighted, _ = pool.clip(index)
        except AudioDecodeError:
            errors.append(pool.name(index))
            if retries < cfg.decode_retries:
                retries += 1
                queue.extend(_draw_events(pool, rng, 1, None))
            continue
        event = _make_event(pool, index, wave, weighted, rng, cfg)
        span = max(p.offset + len(p.audio) for p in event.pieces)
        for _ in range(cfg.placement_tries):
            onset = int(rng.integers(0, max(cfg.num_samples - span, 0) + 1))
            if _fits(occupancy, event.pieces, onset, cfg):
                event.onset = onset
                _occupy(occupancy, event.pieces, onset, cfg)
                placed.append(event)
                break
    audio, labels = render(background, placed, cfg)
    spans = [
        [(e.onset + p.offset, min(e.onset + p.offset + len(p.audio), cfg.num_samples)) for p in e.pieces]
        for e in placed
    ]
    return Mixture(
        audio=audio,
        captions=[e.caption for e in placed],
        labels=labels,
        spans=spans,
        sources=[e.source for e in placed],
        background=background_name,
        decode_errors=errors,
        synonyms=[e.synonyms for e in placed],
    )


def _make_event(pool, index, wave, weighted, rng, cfg) -> PlacedEvent:
    captions = pool.captions(index)
    caption = captions[int(rng.integers(len(captions)))] if captions else ""
    limit = round(cfg.max_event_s * cfg.sample_rate)
    if len(wave) > limit:
        start = int(rng.integers(0, len(wave) - limit + 1))
        wave, weighted = wave[start : start + limit], weighted[start : start + limit]
    roll = rng.random()
    mode = "fragment" if roll < cfg.fragment_prob else "plain"
    if cfg.fragment_prob <= roll < cfg.fragment_prob + cfg.repeat_prob:
        mode = "repeat"
    pieces = _event_pieces(wave, weighted, mode, rng, cfg)
    offset_db = rng.uniform(*cfg.event_db)
    gain = 10.0 ** ((cfg.background_db + offset_db - _loud_part_db(pieces, cfg)) / 20.0)
    return PlacedEvent(caption, pool.name(index), pieces, onset=0, gain=float(gain), synonyms=tuple(captions))


def simulate_index(pool: ClipPool, seed: int, index: int, cfg: SimulatorConfig) -> Mixture:
    """The mixture for (seed, index), with clip ``index % len(pool)`` as its primary."""
    rng = np.random.default_rng([seed, index])
    return simulate(pool, rng, cfg, primary=index % len(pool) if len(pool) else None)


def make_event(
    audio: np.ndarray, caption: str, onset: int, level_db: float, cfg: SimulatorConfig, source: str = ""
) -> PlacedEvent:
    """A one-piece event at sample ``onset`` whose loud part sits at ``level_db`` dBFS (A-weighted).

    For building mixtures by hand (tests, tools); ``render`` turns them into labels.
    """
    pieces = _event_pieces(np.asarray(audio, dtype=np.float32), None, "plain", None, cfg)
    gain = 10.0 ** ((level_db - _loud_part_db(pieces, cfg)) / 20.0)
    return PlacedEvent(caption, source, pieces, onset=int(onset), gain=float(gain))


def interval_labels(intervals: Sequence[tuple[int, int]], cfg: SimulatorConfig) -> np.ndarray:
    """[frames] uint8: frames covered for >= ``min_overlap`` by the union of [start, end) samples."""
    covered = np.zeros(cfg.num_samples + 1, dtype=np.int32)
    for start, end in intervals:
        start, end = max(int(start), 0), min(int(end), cfg.num_samples)
        if end > start:
            covered[start] += 1
            covered[end] -= 1
    active = np.cumsum(covered[:-1]) > 0
    fraction = active.reshape(cfg.frames, -1).mean(axis=1)
    return (fraction >= cfg.min_overlap - 1e-9).astype(np.uint8)


def annotated_mixture(
    wave: np.ndarray,
    events: Sequence[tuple[float, float, str]],
    rng: np.random.Generator,
    cfg: SimulatorConfig,
    source: str = "",
) -> Mixture:
    """A strongly labelled recording as a SED element: a random 10 s crop (shorter clips are
    zero-padded at the end), labels from the annotated (onset s, offset s, caption) events.

    Only captions with an event inside the crop become texts; same captions are merged.
    """
    n = cfg.num_samples
    start = int(rng.integers(0, len(wave) - n + 1)) if len(wave) > n else 0
    audio = np.zeros(n, dtype=np.float32)
    piece = wave[start : start + n]
    audio[: len(piece)] = piece
    by_caption: dict[str, list[tuple[int, int]]] = {}
    for onset, offset, caption in events:
        a = round(onset * cfg.sample_rate) - start
        b = round(offset * cfg.sample_rate) - start
        if b > 0 and a < min(n, len(piece)) and b > a:
            by_caption.setdefault(caption, []).append((max(a, 0), min(b, n)))
    captions = list(by_caption)
    labels = np.stack([interval_labels(by_caption[c], cfg) for c in captions]) if captions else None
    return Mixture(
        audio=audio,
        captions=captions,
        labels=labels if labels is not None else np.zeros((0, cfg.frames), np.uint8),
        spans=[by_caption[c] for c in captions],
        sources=[source] * len(captions),
        background=source,
    )
