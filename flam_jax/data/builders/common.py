"""What the builders share: the stored audio feature, file lookup, table reading, the
skip report and the build-time cut of long recordings.

Audio is stored as 16-bit FLAC bytes at 48 kHz mono (``audio`` feature), decoded at read
time with ``flam_jax.audio.io.decode_audio``. No TensorFlow is imported: TFDS writes and
reads ArrayRecord files through its numpy paths.

Bad items (no audio, no caption, an undecodable clip, an unreadable row) are skipped and
counted by ``Skips``; past ``max_errors`` the build stops with a one-line error. TFDS writes
a split into an ``.incomplete`` folder and renames it only when every split is done, so a
stopped build leaves nothing that looks built.

Long recordings (``cut=True``, the corpus readers of ``captioned.py``) become consecutive
pieces of at most MAX_CLIP_S from the start; a last piece under MIN_PIECE_S is dropped. Each
piece keeps the recording's captions and tags, is named ``KEY#k`` and records where it
begins (``start_s``, also a column of the metadata index) and its recording (``KEY``).
"""

import collections
import contextlib
import csv
import dataclasses
import io
import logging
import multiprocessing
import os
from collections.abc import Iterable, Iterator

import numpy as np
import tensorflow_datasets as tfds

from flam_jax import paths
from flam_jax.audio import io as audio_io
from flam_jax.errors import AudioDecodeError, DataError
from flam_jax.timeline import SAMPLE_RATE

log = logging.getLogger(__name__)

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".mp3")
MAX_ERRORS = 100  # skipped items a build tolerates (build_dataset.py --max-errors)
MAX_CLIP_S = 10.0  # spec §8: events are clips shorter than 10 s
MIN_PIECE_S = 1.0
NAMED_SKIPS = 20  # skipped items a summary names (the count covers all)
WORKER_CHUNK = 4  # items a build worker takes at a time


def audio_features(**extra) -> tfds.features.FeaturesDict:
    """The features every builder stores, plus ``extra``."""
    return tfds.features.FeaturesDict(
        {
            "id": tfds.features.Text(),
            "audio": tfds.features.Scalar(dtype=np.object_, doc="FLAC bytes, 48 kHz mono, 16 bit"),
            "num_samples": tfds.features.Scalar(dtype=np.int64),
            **extra,
        }
    )


def timed_events(**extra) -> tfds.features.Sequence:
    """A clip's events: onset and offset in seconds, a label, plus ``extra`` fields."""
    return tfds.features.Sequence(
        {
            "onset": tfds.features.Scalar(dtype=np.float32),
            "offset": tfds.features.Scalar(dtype=np.float32),
            "label": tfds.features.Text(),
            **extra,
        }
    )


def captioned_clip_features(**extra) -> tfds.features.FeaturesDict:
    """The features of a captioned clip (``flam_clips``, ``flam_captioned``), plus ``extra``."""
    text_list = tfds.features.Sequence(tfds.features.Text())
    return audio_features(
        captions=text_list,
        tags=text_list,
        source=tfds.features.Text(),
        licence=tfds.features.Text(),
        recording=tfds.features.Text(),
        **extra,
    )


def manual_dir(dl_manager, builder_name: str) -> str:
    path = dl_manager.manual_dir
    if path is None or not paths.isdir(os.fspath(path)):
        raise DataError(f"{builder_name}: manual directory not found: {path}")
    return os.fspath(path)


@dataclasses.dataclass(frozen=True)
class Missing:
    """An item without usable audio or text: why it is skipped."""

    reason: str


class Skips:
    """The items a build skipped, by reason; more than ``max_errors`` stops the build."""

    def __init__(self, max_errors: int = MAX_ERRORS):
        self.max_errors = max_errors
        self.items: list[tuple[str, str, str]] = []  # (builder, item, reason)

    def add(self, builder_name: str, item: str, reason: str) -> None:
        self.items.append((builder_name, item, reason))
        log.warning("%s: %s: %s, skipped", builder_name, item, reason)
        if len(self.items) > self.max_errors:
            raise DataError(
                f"{builder_name}: more than {self.max_errors} items skipped (the last: {item}: {reason}); "
                "the build stopped and left nothing marked built (raise --max-errors to go on)"
            )

    def summary(self) -> str:
        """Lines for the end of a build: counts by reason, then the first NAMED_SKIPS items."""
        if not self.items:
            return "skipped: none"
        counts = collections.Counter(reason.split(":")[0] for _, _, reason in self.items)
        lines = [f"skipped {len(self.items)}: " + ", ".join(f"{n} {r}" for r, n in counts.most_common())]
        lines += [f"  {item}: {reason}" for _, item, reason in self.items[:NAMED_SKIPS]]
        if len(self.items) > NAMED_SKIPS:
            lines.append(f"  ... and {len(self.items) - NAMED_SKIPS} more")
        return "\n".join(lines)


class Builder(tfds.core.GeneratorBasedBuilder):
    """The base of every flam builder: ``max_errors``, ``workers`` (encoding processes) and
    the ``skips`` of this build.

    Abstract (no ``_info``), so TFDS registers only its subclasses."""

    def __init__(self, *, max_errors: int = MAX_ERRORS, workers: int = 0, beam: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.skips = Skips(max_errors)
        self.workers = workers
        self.beam = beam  # the captioned kind's Beam path (beam_build.py)

    def examples(self, items, builder_name: str, *, cut: bool = False):
        return examples(items, builder_name, self.skips, cut=cut, workers=self.workers)


def decoded(key: str, audio) -> np.ndarray:
    """A path (local or remote) or encoded bytes → 48 kHz mono float32."""
    if isinstance(audio, bytes | bytearray | memoryview):
        return audio_io.decode_audio(bytes(audio), source=key)
    return audio_io.load_audio(audio)


def pieces(num_samples: int, rate: int = SAMPLE_RATE) -> list[tuple[int, int]]:
    """(start, length) of the pieces a recording of ``num_samples`` is cut into (module doc)."""
    longest, shortest = round(MAX_CLIP_S * rate), round(MIN_PIECE_S * rate)
    if num_samples <= longest:
        return [(0, num_samples)]
    cuts = [(start, min(longest, num_samples - start)) for start in range(0, num_samples, longest)]
    return [(start, length) for start, length in cuts if length >= shortest]


def find_audio(folders: Iterable[str], names: Iterable[str]) -> str | None:
    """The first existing file among folders x names, also trying the audio extensions."""
    names = list(names)
    for folder in folders:
        for name in names:
            path = paths.join(folder, name)
            if paths.isfile(path):
                return path
            stem = os.path.splitext(path)[0]
            for ext in AUDIO_EXTENSIONS:
                if paths.isfile(stem + ext):
                    return stem + ext
    return None


def read_table(path: str, delimiter: str = ",") -> list[dict[str, str]]:
    if not paths.isfile(path):
        raise DataError(f"table not found: {path}")
    rows = list(csv.DictReader(io.StringIO(paths.read_text(path), newline=""), delimiter=delimiter))
    return [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in rows]


def column(row: dict[str, str], names: tuple[str, ...], path: str) -> str:
    for name in names:
        if name in row:
            return row[name]
    raise DataError(f"{path}: no column named any of {', '.join(names)}")


def encode_item(job: tuple[str, object, dict, bool]) -> tuple[str, list[tuple[str, dict]], str]:
    """(key, audio, features, cut) → (key, its records, "" or why it was skipped): the
    decode-and-encode work of one item, the part ``--workers`` spreads over processes."""
    key, audio, features, cut = job
    if audio is None or isinstance(audio, Missing):
        return key, [], audio.reason if audio is not None else "no audio file"
    try:
        wave = decoded(key, audio)
    except AudioDecodeError as err:
        return key, [], f"undecodable: {err}"
    if not cut:
        record = {**features, "id": key, "audio": audio_io.encode_flac(wave), "num_samples": len(wave)}
        return key, [(key, record)], ""
    spans = pieces(len(wave))
    records = []
    for k, (start, length) in enumerate(spans):
        name = key if len(spans) == 1 else f"{key}#{k}"
        piece = wave[start : start + length]
        record = {
            **features,
            "id": name,
            "audio": audio_io.encode_flac(piece),
            "num_samples": len(piece),
            "recording": features.get("recording") or key,
            "start_s": start / SAMPLE_RATE,
        }
        records.append((name, record))
    return key, records, ""


def examples(
    items: Iterable[tuple[str, object, dict]],
    builder_name: str,
    skips: Skips | None = None,
    *,
    cut: bool = False,
    workers: int = 0,
) -> Iterator[tuple[str, dict]]:
    """Encode (key, audio, other features); ``audio`` is a path, encoded bytes, None (no
    file) or ``Missing``. Skipped items go to ``skips``; ``cut``: long recordings become
    pieces (module doc); ``workers`` > 0 encodes in that many processes, in order, so the
    records are those of one process."""
    skips = skips if skips is not None else Skips()
    kept, before = 0, len(skips.items)

    jobs = ((key, audio, features, cut) for key, audio, features in items)
    with _mapper(workers) as mapper:
        # Skips are counted here, in item order, whichever process did the work.
        for key, records, problem in mapper(encode_item, jobs):
            if problem:
                skips.add(builder_name, key, problem)
            kept += len(records)
            yield from records
    skipped = len(skips.items) - before
    if skipped:
        log.warning("%s: skipped %d items of this split", builder_name, skipped)
    if kept == 0:
        raise DataError(f"{builder_name}: no readable audio in this split ({skipped} items skipped)")


@contextlib.contextmanager
def _mapper(workers: int):
    """An ordered map: the builtin one, or a process pool's (spawned: no inherited threads)."""
    if workers <= 0:
        yield map
        return
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        yield lambda fn, jobs: pool.imap(fn, jobs, chunksize=WORKER_CHUNK)


def humanise_label(label: str) -> str:
    """'Alarm_bell_ringing' -> 'alarm bell ringing' (class names used as texts)."""
    return " ".join(label.replace("_", " ").replace("-", " ").split()).lower()
