"""Several datasets as one pool, each drawn by its weight (spec §8: 80 % SFX, 20 % general).

``data.sed_sources`` / ``data.global_sources`` list them, ``;``-separated, each
``DATASET:WEIGHT`` or ``DATASET:WEIGHT:TAG|TAG`` (that source's background tags; without
them, ``data.background_tags``)::

    data.sed_sources = "captioned/webdataset:0.8:ambiance|soundscape; clips:0.2"

``WeightedPool`` presents the sources as one index space of *slots*, each naming one clip
of one source. Slots are laid out per group of clips: for the SED stream, event clips and
background clips; for the global stream, every readable clip. In a group, source s (n_s
clips of it, weight w_s among the sources that have any) gets m_s = ceil(w_s * L) slots
spread evenly over its clips, with L = max_s n_s / w_s: the shortest layout in which every
clip has a slot (a source of relatively few clips repeats). Everything that draws
uniformly over a pool (an epoch's permutation, the other events of a mixture, the
backgrounds) then draws events by source weight, backgrounds from the sources that have
them by their weights, and clips of a source evenly. The layout depends only on the
sources and weights, so a checkpointed data position stays valid.
"""

import dataclasses
import logging
import math

import numpy as np

from flam_jax.errors import ConfigError

log = logging.getLogger(__name__)

SLOT_WARNING = 50_000_000  # an epoch this long (a tiny weight on a huge source) is worth a word


@dataclasses.dataclass(frozen=True)
class Source:
    dataset: str
    weight: float
    background_tags: str = ""  # "" = data.background_tags


def parse_sources(spec: str, key: str) -> list[Source]:
    """``"a:0.8:t1|t2; b:0.2"`` → Sources; a malformed one is a one-line ConfigError."""
    sources = []
    for entry in (e.strip() for e in spec.split(";")):
        if not entry:
            continue
        parts = [p.strip() for p in entry.split(":")]
        if len(parts) not in (2, 3) or not parts[0]:
            raise ConfigError(f"{key}: {entry!r} is not DATASET:WEIGHT or DATASET:WEIGHT:TAG|TAG")
        try:
            weight = float(parts[1])
        except ValueError:
            raise ConfigError(f"{key}: the weight of {parts[0]} is not a number ({parts[1]!r})") from None
        if not weight > 0 or not math.isfinite(weight):
            raise ConfigError(f"{key}: the weight of {parts[0]} must be positive (got {parts[1]})")
        tags = parts[2].replace("|", ",") if len(parts) == 3 else ""
        sources.append(Source(parts[0], weight, tags))
    names = [s.dataset for s in sources]
    if len(set(names)) != len(names):
        raise ConfigError(f"{key}: a dataset is listed twice ({spec!r})")
    return sources


class WeightedPool:
    """Pools drawn by weight through one index space of slots (module doc); the
    ``pools.ClipPool`` interface the simulator and the global pipeline use. ``stream`` is
    ``"sed"`` (events and backgrounds weighted apart) or ``"global"``."""

    def __init__(
        self, members: list[tuple[object, float]], names: list[str] | None = None, stream: str = "sed"
    ):
        if not members:
            raise ConfigError("a weighted pool needs at least one source")
        self.names = list(names or [f"source{k}" for k in range(len(members))])
        self.pools = [pool for pool, _ in members]
        for name, pool in zip(self.names, self.pools, strict=True):
            if len(pool.readable_indices) == 0:
                raise ConfigError(f"source {name} holds no readable clips")
        weights = np.array([w for _, w in members], dtype=np.float64)
        groups = ("event_indices", "background_indices") if stream == "sed" else ("readable_indices",)
        sources, clips = [], []
        for group in groups:
            for k, m, chosen in self._layout([getattr(p, group) for p in self.pools], weights):
                sources.append(np.full(m, k, dtype=np.int16))
                clips.append(chosen.astype(np.int64))
        self._source = np.concatenate(sources)
        self._clip = np.concatenate(clips)
        if len(self) > SLOT_WARNING:
            log.warning("weighted sources: %d slots per epoch (a small weight on a large source)", len(self))
        background = np.zeros(len(self), dtype=bool)
        for k, pool in enumerate(self.pools):
            mine = self._source == k
            background[mine] = np.isin(self._clip[mine], pool.background_indices)
        self.background_indices = np.flatnonzero(background)
        self.event_indices = np.flatnonzero(~background)
        self.readable_indices = np.arange(len(self))
        self.background_tags = frozenset().union(*(p.background_tags for p in self.pools))
        windows = {p.level_window for p in self.pools}
        if len(windows) != 1:
            raise ConfigError(f"sources have indexes of different level windows {sorted(windows)}")
        self.level_window = windows.pop()

    @staticmethod
    def _layout(lists: list[np.ndarray], weights: np.ndarray):
        """(source, slot count, the clip of each slot) of one group (module doc)."""
        having = [k for k, clips in enumerate(lists) if len(clips)]
        if not having:
            return []
        share = weights[having] / weights[having].sum()
        length = max(len(lists[k]) / w for k, w in zip(having, share, strict=True))
        out = []
        for k, w in zip(having, share, strict=True):
            count, n = math.ceil(w * length - 1e-9), len(lists[k])
            out.append((k, count, np.asarray(lists[k])[(np.arange(count) * n) // count]))
        return out

    def __len__(self) -> int:
        return len(self._clip)

    def locate(self, i: int) -> tuple[int, int]:
        """slot → (source number, clip of that source)."""
        return int(self._source[i]), int(self._clip[i])

    def source_of(self, i: int) -> str:
        return self.names[self.locate(i)[0]]

    def _call(self, method: str, i: int, *args):
        k, clip = self.locate(i)
        return getattr(self.pools[k], method)(clip, *args)

    def name(self, i: int) -> str:
        return self._call("name", i)

    def captions(self, i: int) -> list[str]:
        return self._call("captions", i)

    def num_samples(self, i: int) -> int:
        return self._call("num_samples", i)

    def is_background(self, i: int) -> bool:
        return self._call("is_background", i)

    def readable(self, i: int) -> bool:
        return self._call("readable", i)

    def powers(self, i: int, window: int | None = None) -> np.ndarray:
        return self._call("powers", i, window)

    def read(self, i: int, start: int = 0, length: int | None = None) -> np.ndarray:
        return self._call("read", i, start, length)
