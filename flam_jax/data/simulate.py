"""The FLAM mixture simulator: one 10 s, 48 kHz mixture with frame labels per event.

A mixture is a deterministic function of (pool, seed, index): ``simulate_index`` seeds a
numpy Generator from (seed, index) and ``simulate`` draws everything from it (the Grain
pipeline passes its own per-element Generator to ``simulate`` instead). The recipe is
FLAM_SPEC section 8; every choice the spec leaves open is a field of ``SimulatorConfig``
and is listed in WORKSPACE.md "Spec decisions".

A mixture is planned from the pool's metadata before any audio is read: the background
crop and every event (its clip, crop, fragments or repetitions, gain, onset) follow from
the clips' lengths and their A-weighted levels per 12.5 ms window, which the split's index
holds (``data.index``). Only the background crop and the events that found a place are
decoded, and nothing is A-weighted while mixing.

Labels come from loudness, not from the placement: events start on the 12.5 ms window
grid, so a clip's windows are the mixture's. A window where an event's A-weighted power
in the final mixture (after its gain and the peak limiter) is below ``inactive_db`` is
inactive, and a 0.3125 s frame is positive when at least ``min_overlap`` of its windows
are active. Two approximations, both at piece edges: a window cut by a piece's end keeps
the cut fraction of its power, and the 10 ms fades scale the edge windows by the energy a
linear ramp keeps (as if the power were even within the window). Events built by hand
(``make_event``) are A-weighted exactly instead.
"""

import dataclasses
import functools
from collections.abc import Sequence

import numpy as np
from scipy import signal

from flam_jax.audio import io as audio_io
from flam_jax.errors import AudioDecodeError, DataError
from flam_jax.timeline import WINDOW_SAMPLES


@dataclasses.dataclass(frozen=True)
class SimulatorConfig:
    sample_rate: int = audio_io.SAMPLE_RATE
    num_samples: int = WINDOW_SAMPLES  # 10 s
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
    offsets_db: list[float] = dataclasses.field(default_factory=list)  # per event, above the background

    def event_captions(self, k: int) -> tuple[str, ...]:
        """Every caption that is true of event ``k`` (its drawn caption first)."""
        extra = self.synonyms[k] if self.synonyms else ()
        return (self.captions[k], *(c for c in extra if c != self.captions[k]))


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
    """Linear ramps of ``fade`` samples at both ends of ``piece`` (float32), in place."""
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
    offset: int  # start relative to the event's onset
    power: np.ndarray  # unit-gain A-weighted power per mixture window, from window (onset + offset) // window


@dataclasses.dataclass
class PlacedEvent:
    caption: str
    source: str
    pieces: list[Piece]
    onset: int  # samples
    gain: float  # linear amplitude gain
    synonyms: tuple[str, ...] = ()  # every caption of the source clip
    offset_db: float = 0.0  # drawn level above the background


def _fits(occupancy, pieces, onset, cfg) -> bool:
    for start, end, offset in pieces:
        a = (onset + offset) // cfg.window
        b = -(-(onset + offset + end - start) // cfg.window)
        if occupancy[a:b].max(initial=0) >= cfg.max_overlap:
            return False
    return True


def _occupy(occupancy, pieces, onset, cfg) -> None:
    for start, end, offset in pieces:
        occupancy[(onset + offset) // cfg.window : -(-(onset + offset + end - start) // cfg.window)] += 1


def render(
    background: np.ndarray, events: Sequence[PlacedEvent], cfg: SimulatorConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Sum background and events, limit the peak, and derive frame labels from loudness.

    ``background`` (float32) is already at its final gain and length and becomes the mix
    (it is added to in place). Returns (audio, labels[E, F]).
    """
    mix = np.asarray(background, dtype=np.float32)
    powers = np.zeros((len(events), cfg.windows), dtype=np.float64)
    for e, event in enumerate(events):
        for p in event.pieces:
            start = event.onset + p.offset
            end = min(start + len(p.audio), cfg.num_samples)
            if end <= start:
                continue
            mix[start:end] += np.float32(event.gain) * p.audio[: end - start]
            first = start // cfg.window
            stop = min(first + len(p.power), cfg.windows)
            powers[e, first:stop] += p.power[: stop - first] * event.gain**2
    peak = max(float(mix.max(initial=0.0)), -float(mix.min(initial=0.0)))
    final_gain = cfg.peak_limit / peak if peak > cfg.peak_limit else 1.0
    if final_gain != 1.0:
        mix *= np.float32(final_gain)
    threshold = 10.0 ** (cfg.inactive_db / 10.0) / final_gain**2
    active = powers >= threshold
    fraction = active.reshape(len(events), cfg.frames, cfg.windows_per_frame).mean(axis=2)
    labels = (fraction >= cfg.min_overlap - 1e-9).astype(np.uint8)
    return mix, labels


# --------------------------------------------------------------------------- planning


def _pieces(length: int, mode: str, rng, cfg: SimulatorConfig) -> list[tuple[int, int, int]]:
    """(start, end, offset) of each piece of an event pattern over a ``length``-sample
    segment; starts and offsets are multiples of the window (the level grid)."""
    rate, total, w = cfg.sample_rate, cfg.num_samples, cfg.window
    if mode == "plain":
        return [(0, length, 0)]
    count = int(rng.integers(cfg.pieces[0], cfg.pieces[1] + 1))
    gaps = np.round(rng.uniform(*cfg.gap_s, size=count - 1) * rate / w).astype(int) * w
    if gaps.sum() > total // 2:  # short mixtures: silence may take at most half
        gaps = gaps * (total // 2) // gaps.sum() // w * w
    if mode == "repeat":
        size = min(length, (total - int(gaps.sum())) // count)
        step = -(-size // w) * w  # repetitions start on the grid
        offsets = np.concatenate([[0], np.cumsum(gaps + step)])[:count]
        return [(0, size, int(o)) for o in offsets]
    size = min(length, total - int(gaps.sum()))
    windows = -(-size // w)
    cuts = np.minimum(np.sort(rng.integers(1, max(windows, count), size=count - 1)) * w, size)
    bounds = np.concatenate([[0], cuts, [size]]).astype(int)
    out, offset = [], 0
    for k in range(count):
        out.append((int(bounds[k]), int(bounds[k + 1]), offset))
        offset += -(-int(bounds[k + 1] - bounds[k]) // w) * w + (int(gaps[k]) if k < count - 1 else 0)
    return [p for p in out if p[1] > p[0]] or [(0, size, 0)]


@functools.lru_cache(maxsize=16)
def _fade_energy(fade: int, window: int) -> np.ndarray:
    """Fraction of a window's energy kept by a linear fade-in of ``fade`` samples, for each
    window the fade touches (even power assumed)."""
    count = max(1, -(-fade // window))
    ramp = np.minimum(np.arange(count * window) / max(fade, 1), 1.0) ** 2
    return ramp.reshape(count, window).mean(axis=1)


def _piece_power(clip_power: np.ndarray, start: int, end: int, total: int, cfg) -> np.ndarray:
    """Unit-gain power per window of clip samples ``[start, end)`` (``start`` on the grid),
    faded at both ends."""
    w = cfg.window
    power = clip_power[start // w : -(-end // w)].copy()
    if end % w and end < total and len(power):
        power[-1] *= (end % w) / w  # the window runs on past the piece's end
    fade = min(round(cfg.fade_s * cfg.sample_rate), (end - start) // 2)
    if fade > 0 and len(power):
        keep = _fade_energy(fade, w)[: len(power)]
        power[: len(keep)] *= keep
        power[len(power) - len(keep) :] *= keep[::-1]
    return power


def _loud_part_db(powers: Sequence[np.ndarray], cfg: SimulatorConfig) -> float:
    """A-weighted level over the windows within ``loud_part_db`` of the loudest one."""
    power = np.concatenate(powers)
    if power.size == 0:
        return audio_io.SILENCE_DB
    loud = power[power >= power.max() * 10.0 ** (-cfg.loud_part_db / 10.0)]
    return 10.0 * np.log10(max(float(loud.mean()), 10.0 ** (audio_io.SILENCE_DB / 10)))


@dataclasses.dataclass
class _Plan:
    """An event decided from metadata only: which samples of which clip, where, how loud."""

    index: int
    caption: str
    synonyms: tuple[str, ...]
    start: int  # first clip sample of the segment (on the grid)
    pieces: list[tuple[int, int, int]]  # (segment start, end, offset) in samples
    powers: list[np.ndarray]
    gain: float
    offset_db: float

    @property
    def span(self) -> int:
        return max(offset + end - start for start, end, offset in self.pieces)


def _plan_event(pool, index: int, rng, cfg: SimulatorConfig) -> _Plan:
    captions = pool.captions(index)
    caption = captions[int(rng.integers(len(captions)))] if captions else ""
    total, w = pool.num_samples(index), cfg.window
    limit = max(round(cfg.max_event_s * cfg.sample_rate) // w * w, w)
    start, length = 0, total
    if total > limit:  # longer clips: a random crop on the grid
        start, length = w * int(rng.integers(0, (total - limit) // w + 1)), limit
    roll = rng.random()
    mode = "fragment" if roll < cfg.fragment_prob else "plain"
    if cfg.fragment_prob <= roll < cfg.fragment_prob + cfg.repeat_prob:
        mode = "repeat"
    pieces = _pieces(length, mode, rng, cfg)
    clip_power = pool.powers(index, w)
    powers = [_piece_power(clip_power, start + a, start + b, total, cfg) for a, b, _ in pieces]
    offset_db = float(rng.uniform(*cfg.event_db))
    gain = 10.0 ** ((cfg.background_db + offset_db - _loud_part_db(powers, cfg)) / 20.0)
    return _Plan(index, caption, tuple(captions), start, pieces, powers, float(gain), offset_db)


def _place(plan: _Plan, occupancy, rng, cfg: SimulatorConfig) -> int | None:
    slots = max(cfg.num_samples - plan.span, 0) // cfg.window
    for _ in range(cfg.placement_tries):
        onset = cfg.window * int(rng.integers(0, slots + 1))
        if _fits(occupancy, plan.pieces, onset, cfg):
            return onset
    return None


def _realise(pool, plan: _Plan, onset: int, cfg: SimulatorConfig) -> PlacedEvent:
    """Decode the planned samples (one read covering every piece) and fade the pieces (in
    place: the pool hands out arrays the caller owns, and fragments never overlap)."""
    lo = min(a for a, _, _ in plan.pieces)
    hi = max(b for _, b, _ in plan.pieces)
    wave = pool.read(plan.index, plan.start + lo, hi - lo)
    fade = round(cfg.fade_s * cfg.sample_rate)
    faded: dict[tuple[int, int], np.ndarray] = {}  # repetitions share one piece
    pieces = []
    for (a, b, offset), power in zip(plan.pieces, plan.powers, strict=True):
        if (a, b) not in faded:
            faded[(a, b)] = _fade(wave[a - lo : b - lo], fade)
        pieces.append(Piece(faded[(a, b)], offset, power))
    name = pool.name(plan.index)
    return PlacedEvent(plan.caption, name, pieces, onset, plan.gain, plan.synonyms, plan.offset_db)


def _span_level_db(power: np.ndarray, start: int, length: int, window: int) -> float:
    """Mean A-weighted level of samples ``[start, start + length)`` from window powers."""
    energy = float(power[start // window : -(-(start + length) // window)].sum()) * window
    return 10.0 * np.log10(max(energy / max(length, 1), 10.0 ** (audio_io.SILENCE_DB / 10)))


def _background(pool, rng, cfg, primary, errors) -> tuple[np.ndarray, str]:
    candidates = pool.background_indices
    choice = primary if primary is not None and pool.is_background(primary) else None
    n = cfg.num_samples
    for _ in range(cfg.decode_retries + 1):
        if choice is None:
            if len(candidates) == 0:
                break
            choice = int(candidates[rng.integers(len(candidates))])
        total = pool.num_samples(choice)
        start = int(rng.integers(0, total - n + 1)) if total > n else 0
        try:
            wave = pool.read(choice, start, n)
        except AudioDecodeError:
            errors.append(pool.name(choice))
            choice = None
            continue
        level = _span_level_db(pool.powers(choice, cfg.window), start, len(wave), cfg.window)
        if len(wave) < n:
            wave = loop_to_length(wave, n, round(cfg.crossfade_s * cfg.sample_rate))
        return _at_level(wave, level, cfg.background_db), pool.name(choice)
    noise = coloured_noise(rng, n, cfg.sample_rate)
    return _at_level(noise, loudness_db(audio_io.a_weight(noise)), cfg.background_db), "noise"


def _at_level(wave, level_db, target_db) -> np.ndarray:
    """``wave`` (owned, float32) scaled in place to ``target_db``."""
    if level_db > audio_io.SILENCE_DB + 1:
        wave *= np.float32(10.0 ** ((target_db - level_db) / 20.0))
    return wave


def _draw_events(pool, candidates, rng, count, primary) -> list[int]:
    chosen = [primary] if primary is not None and not pool.is_background(primary) else []
    if len(candidates) == 0:
        return chosen
    seen = set(chosen)
    while len(chosen) < count:
        index = int(candidates[rng.integers(len(candidates))])
        if index in seen and len(seen) < len(candidates):
            continue
        seen.add(index)
        chosen.append(index)
    return chosen


def simulate(
    pool, rng: np.random.Generator, cfg: SimulatorConfig, primary: int | None = None, *, events=None
) -> Mixture:
    """Simulate one mixture; ``primary`` (an index into ``pool``) is always used.

    A background primary becomes the background, an event primary the first event; the
    other events are drawn from ``events`` (clip indices; default: every event clip).
    Clips that fail to decode are replaced by others and listed in ``Mixture.decode_errors``.
    """
    candidates = pool.event_indices if events is None else events
    errors: list[str] = []
    background, background_name = _background(pool, rng, cfg, primary, errors)
    count = int(rng.integers(cfg.min_events, cfg.max_events + 1))
    occupancy = np.zeros(cfg.windows, dtype=np.int32)
    placed: list[PlacedEvent] = []
    queue = _draw_events(pool, candidates, rng, count, primary)
    retries = 0
    while queue:
        index = queue.pop(0)
        event = None
        if pool.readable(index) and pool.num_samples(index) > 0:
            plan = _plan_event(pool, index, rng, cfg)
            onset = _place(plan, occupancy, rng, cfg)
            if onset is None:
                continue  # no room left: skipped before anything was decoded
            try:
                event = _realise(pool, plan, onset, cfg)
            except AudioDecodeError:
                pass
        if event is None:
            errors.append(pool.name(index))
            if retries < cfg.decode_retries:
                retries += 1
                queue.extend(_draw_events(pool, candidates, rng, 1, None))
            continue
        _occupy(occupancy, plan.pieces, onset, cfg)
        placed.append(event)
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
        offsets_db=[e.offset_db for e in placed],
    )


def simulate_index(pool, seed: int, index: int, cfg: SimulatorConfig) -> Mixture:
    """The mixture for (seed, index), with clip ``index % len(pool)`` as its primary."""
    rng = np.random.default_rng([seed, index])
    return simulate(pool, rng, cfg, primary=index % len(pool) if len(pool) else None)


def make_event(
    audio: np.ndarray, caption: str, onset: int, level_db: float, cfg: SimulatorConfig, source: str = ""
) -> PlacedEvent:
    """A one-piece event at sample ``onset`` whose loud part sits at ``level_db`` dBFS (A-weighted).

    For building mixtures by hand (tests, tools): the piece is A-weighted exactly, at any
    onset; ``render`` turns such events into labels.
    """
    faded = _fade(np.array(audio, dtype=np.float32), round(cfg.fade_s * cfg.sample_rate))
    weighted = signal.sosfilt(audio_io.a_weighting_sos(cfg.sample_rate), faded).astype(np.float32)
    _, power = _window_power(weighted, int(onset), cfg.window)
    gain = 10.0 ** ((level_db - _loud_part_db([power], cfg)) / 20.0)
    return PlacedEvent(caption, source, [Piece(faded, 0, power)], onset=int(onset), gain=float(gain))


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
    audio: np.ndarray,
    start: int,
    events: Sequence[tuple[float, float, str]],
    cfg: SimulatorConfig,
    source: str = "",
) -> Mixture:
    """A strongly labelled recording as a SED element: ``audio`` is its crop of at most 10 s
    beginning at sample ``start`` (shorter crops are zero-padded at the end); labels come
    from the annotated (onset s, offset s, caption) events.

    Only captions with an event inside the crop become texts; same captions are merged.
    """
    n = cfg.num_samples
    mix = np.zeros(n, dtype=np.float32)
    piece = audio[:n]
    mix[: len(piece)] = piece
    by_caption: dict[str, list[tuple[int, int]]] = {}
    for onset, offset, caption in events:
        a = round(onset * cfg.sample_rate) - start
        b = round(offset * cfg.sample_rate) - start
        if b > 0 and a < min(n, len(piece)) and b > a:
            by_caption.setdefault(caption, []).append((max(a, 0), min(b, n)))
    captions = list(by_caption)
    labels = np.stack([interval_labels(by_caption[c], cfg) for c in captions]) if captions else None
    return Mixture(
        audio=mix,
        captions=captions,
        labels=labels if labels is not None else np.zeros((0, cfg.frames), np.uint8),
        spans=[by_caption[c] for c in captions],
        sources=[source] * len(captions),
        background=source,
    )
