"""A search index of a folder of recordings, and finding files (and moments) by text (flam-search).

INDEX/ holds ``index.json`` (format, version, the model's folder and identity, audio
folder, hop), ``manifest.jsonl`` (one line per file as it is done: its item, size and
modification time, or its error; the last line of a path wins), ``items/<n>.npz`` (window
frame embeddings [W, F, D] float16, window starts, length, global embedding) and
``globals.npy`` + ``globals.json`` (all global embeddings). Files are found recursively by
audio extension; unreadable ones are skipped and listed at the end (exit 1).

Indexing again resumes: a file whose size and modification time are the recorded ones is
skipped, a changed one is re-embedded (its old item deleted), a failed one retried, and
one no longer in the folder dropped. At the end of each run the manifest is rewritten
with one line per file still there, items nothing refers to are deleted, and the globals
are rewritten, so a query never returns a file that is gone or an embedding of what it
used to hold. A remote file's modification time is kept to the second only (the store's);
its size still tells most rewrites.

An index belongs to one model. ``index.json`` records ``export_dir.export_identity`` (a
hash of the params file and the model section): resuming with another model is refused
with one line naming both, as is another audio folder or hop; ``rebuild`` (``--rebuild``)
deletes the items and starts over. The same model moved to another folder is accepted
and its new place recorded. A query refuses an index whose model folder no longer holds
the model it was built with (the hash is recomputed, a second read of the params file).
``--out`` is checked before anything is embedded: a file, an unwritable place, or a
non-empty folder that is not an index is refused.

A query ranks files by the cosine of the text and global embeddings and gives each
hit's best span: the run of median-filtered frame scores above the threshold around the
peak frame (the peak frame alone if nothing is above).

``index.json`` carries the format version (``VERSION``, now 3: the model identity and each
file's size and modification time; 2 had neither, 1 had zero-padded global windows).
Resuming into an index of another version is refused with one line (``--rebuild`` or
another ``--out``); an older index without an identity can still be queried, unchecked.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import sys

import numpy as np
from tqdm import tqdm

from flam_jax import paths
from flam_jax.errors import ConfigError, DataError, FlamError, InputError
from flam_jax.export.export_dir import export_identity
from flam_jax.infer.api import FLAM, WindowEmbedding
from flam_jax.jsonfile import read_json
from flam_jax.timeline import median_filter

FORMAT = "flam_jax.search"
# 3: model identity, file size and mtime; 2: global embeddings by the timeline's global
# rule; 1: zero-padded windows.
VERSION = 3
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".au", ".w64", ".caf")
INDEX_FILE = "index.json"
MANIFEST_FILE = "manifest.jsonl"
ITEMS_DIR = "items"
GLOBALS_FILES = ("globals.npy", "globals.json")


@dataclasses.dataclass
class IndexRun:
    """What one ``build_index`` run did."""

    indexed: int  # files embedded in this run (new, changed and retried ones that worked)
    skipped: int  # unchanged files already in the index
    changed: int  # files re-embedded because their size or modification time changed
    dropped: int  # files no longer in the folder, removed from the index
    failures: list[tuple[str, str]]  # (path, error) of the files that could not be read


def short_identity(identity: str) -> str:
    """The first 12 hex digits: enough to tell two models apart in a message."""
    return identity[:12]


def find_audio(audio_dir: str) -> list[str]:
    """Audio files under ``audio_dir`` (local or remote; relative paths, sorted)."""
    if not paths.isdir(audio_dir):
        raise InputError(f"audio folder not found: {audio_dir}")
    return [
        rel
        for rel in paths.walk_files(audio_dir)
        if rel.lower().endswith(AUDIO_EXTENSIONS) and not os.path.basename(rel).startswith(".")
    ]


def read_manifest(index_dir: str) -> dict[str, dict]:
    """{relative path: its last manifest line}; a torn last line (killed mid-write) is ignored."""
    entries = {}
    path = paths.join(index_dir, MANIFEST_FILE)
    if not paths.exists(path):
        return entries
    for line in paths.read_text(path).splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        entries[entry["path"]] = entry
    return entries


def check_index_out(index_dir: str) -> None:
    """Refuse, before any embedding, an ``--out`` that is a file, cannot be written, or is a
    non-empty folder that is not an index (an index is never mixed into other files)."""
    paths.require_writable(index_dir, "--out")
    if (
        paths.isdir(index_dir)
        and paths.listdir(index_dir)
        and not paths.exists(paths.join(index_dir, INDEX_FILE))
    ):
        raise ConfigError(
            f"--out {index_dir} is not empty and not a flam-search index; give a new or empty folder"
        )


def _check_resume(index_dir: str, meta: dict, rebuild: bool) -> None:
    """Refuse to resume an index built otherwise (another version, model, folder or hop)."""
    if not paths.exists(paths.join(index_dir, INDEX_FILE)):
        return
    old = read_index_meta(index_dir)
    if rebuild:
        return
    if old.get("version") != VERSION:
        raise InputError(
            f"{index_dir} is a version {old.get('version')} index (this is version {VERSION}: model "
            "identity and file sizes recorded); pass --rebuild to start it over, or use another --out"
        )
    if old.get("model_identity") != meta["model_identity"]:
        raise InputError(
            f"{index_dir} was built with model {short_identity(str(old.get('model_identity')))} "
            f"({old.get('model')}), but {meta['model']} is model {short_identity(meta['model_identity'])}; "
            "pass --rebuild to index again with it, or use another --out"
        )
    if (old.get("audio_dir"), old.get("hop_s")) != (meta["audio_dir"], meta["hop_s"]):
        raise InputError(
            f"{index_dir} was built from {old.get('audio_dir')} at hop {old.get('hop_s')} s; pass "
            f"--rebuild to index {meta['audio_dir']} at hop {meta['hop_s']} s instead, or use another --out"
        )


def _start_index(index_dir: str, meta: dict, rebuild: bool) -> None:
    if rebuild:
        paths.remove(paths.join(index_dir, MANIFEST_FILE))
        paths.rmtree(paths.join(index_dir, ITEMS_DIR))
        for name in GLOBALS_FILES:
            paths.remove(paths.join(index_dir, name))
    # index.json first: a folder holding anything of an index is recognisably one. Written
    # on every run so that a moved model's new place is what queries load.
    paths.makedirs(index_dir)
    paths.write_text(paths.join(index_dir, INDEX_FILE), json.dumps(meta, indent=1))
    paths.makedirs(paths.join(index_dir, ITEMS_DIR))


def read_index_meta(index_dir: str) -> dict:
    path = paths.join(index_dir, INDEX_FILE)
    if not paths.exists(path):
        raise InputError(f"{index_dir} is not a flam-search index (no {INDEX_FILE})")
    meta = read_json(path, DataError, f"{path} disappeared while reading it")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise DataError(f"{path} is not a flam-search index")
    return meta


def build_index(
    audio_dir: str,
    model_dir: str,
    index_dir: str,
    *,
    hop_s: float = 10.0,
    progress: bool = True,
    batch_size: int = 8,
    model=None,
    rebuild: bool = False,
) -> IndexRun:
    """Embed every audio file not yet in the index as it is now (see the module docstring).

    ``model``: an already loaded ``FLAM`` of ``model_dir`` (reuses its compiled functions).
    ``rebuild``: delete the index's items first and index everything again.
    """
    files = find_audio(audio_dir)
    check_index_out(index_dir)
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "model": paths.resolve(model_dir),
        "model_identity": export_identity(model_dir),
        "audio_dir": paths.resolve(audio_dir),
        "hop_s": hop_s,
    }
    _check_resume(index_dir, meta, rebuild)
    model = model or FLAM.load(model_dir, max_batch=batch_size)
    _start_index(index_dir, meta, rebuild)
    recorded = read_manifest(index_dir)
    todo, skipped, changed = [], 0, 0
    for rel in files:
        size, mtime_ns = paths.stat(paths.join(audio_dir, rel))
        entry = recorded.get(rel, {})
        if "item" in entry and paths.exists(paths.join(index_dir, entry["item"])):
            if (entry.get("size"), entry.get("mtime_ns")) == (size, mtime_ns):
                skipped += 1
                continue
            changed += 1
        todo.append((rel, size, mtime_ns))
    # Past every item a line names, stale ones included: those are deleted only at the end.
    next_id = 1 + max(
        (int(os.path.basename(e["item"]).split(".")[0]) for e in recorded.values() if "item" in e),
        default=-1,
    )
    failures = []
    manifest = paths.AppendLog(paths.join(index_dir, MANIFEST_FILE))
    manifest.end_line()
    try:
        for rel, size, mtime_ns in tqdm(
            todo, desc="indexing", unit="file", disable=not progress, file=sys.stderr
        ):
            try:
                emb = model.embed_windows(paths.join(audio_dir, rel), hop_s=hop_s)
            except FlamError as err:
                failures.append((rel, str(err)))
                manifest.write(json.dumps({"path": rel, "error": str(err)}) + "\n")
                manifest.flush()
                continue
            item = f"{ITEMS_DIR}/{next_id:07d}.npz"
            next_id += 1
            arrays = {
                "frames": emb.frames.astype(np.float16),
                "starts": np.asarray(emb.starts, np.int64),
                "num_samples": np.int64(emb.num_samples),
                "global_": emb.global_,
            }
            paths.write_bytes(paths.join(index_dir, item), _npz_bytes(arrays))
            line = {
                "path": rel,
                "item": item,
                "duration_s": emb.duration_s,
                "size": size,
                "mtime_ns": mtime_ns,
            }
            manifest.write(json.dumps(line) + "\n")
            manifest.flush()
    finally:
        manifest.close()
    dropped = _finish_run(index_dir, set(files))
    return IndexRun(len(todo) - len(failures), skipped, changed, dropped, failures)


def _npz_bytes(arrays: dict) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _load_npz(path: str):
    return np.load(io.BytesIO(paths.read_bytes(path)))


def _finish_run(index_dir: str, present: set[str]) -> int:
    """Keep the files still in the folder: rewrite the manifest (one line each), delete
    the items no line names, rewrite the globals; returns how many files were dropped."""
    view = read_manifest(index_dir)
    kept = {rel: entry for rel, entry in view.items() if rel in present}
    lines = "".join(json.dumps(entry) + "\n" for entry in kept.values())
    paths.write_text(paths.join(index_dir, MANIFEST_FILE), lines)
    named = {entry["item"] for entry in kept.values() if "item" in entry}
    for name in paths.listdir(paths.join(index_dir, ITEMS_DIR)):
        if f"{ITEMS_DIR}/{name}" not in named:
            paths.remove(paths.join(index_dir, ITEMS_DIR, name))
    entries = [entry for entry in kept.values() if "item" in entry]
    globals_ = [_load_npz(paths.join(index_dir, e["item"]))["global_"] for e in entries]
    matrix = np.stack(globals_) if globals_ else np.zeros((0, 0), np.float32)
    buffer = io.BytesIO()
    np.save(buffer, matrix)
    npy, listing = GLOBALS_FILES
    paths.write_bytes(paths.join(index_dir, npy), buffer.getvalue())
    paths.write_text(paths.join(index_dir, listing), json.dumps(entries))
    return len(view) - len(kept)


def check_model(index_dir: str, meta: dict) -> None:
    """Refuse an index whose model folder no longer holds the model it was built with."""
    recorded = meta.get("model_identity")
    if not recorded:  # an older index recorded none: nothing to compare
        return
    now = export_identity(meta["model"])
    if now != recorded:
        raise InputError(
            f"{index_dir} was built with model {short_identity(recorded)}, but {meta['model']} now holds "
            f"model {short_identity(now)}; index again with --rebuild (or restore that model)"
        )


def best_span(scores: np.ndarray, frame_hop_s: float, duration_s: float, threshold: float = 0.5):
    """(onset, offset, peak) of the best-matching stretch of one query's timeline scores."""
    smooth = median_filter(np.asarray(scores, np.float64), 3)
    peak = int(np.argmax(smooth))
    lo = hi = peak
    if smooth[peak] > threshold:
        while lo > 0 and smooth[lo - 1] > threshold:
            lo -= 1
        while hi + 1 < smooth.shape[0] and smooth[hi + 1] > threshold:
            hi += 1
    return lo * frame_hop_s, min((hi + 1) * frame_hop_s, duration_s), float(smooth[peak])


def query_index(
    index_dir: str, text: str, *, top: int = 10, threshold: float = 0.5, model=None
) -> list[dict]:
    """Top files for ``text``: [{path, score, onset, offset, peak}], best first."""
    if not text.strip():
        raise InputError("the query is empty")
    if top < 1:
        raise InputError(f"--top must be at least 1, got {top}")
    meta = read_index_meta(index_dir)
    check_model(index_dir, meta)
    npy, listing = GLOBALS_FILES
    try:
        matrix = np.load(io.BytesIO(paths.read_bytes(paths.join(index_dir, npy))))
        entries = json.loads(paths.read_text(paths.join(index_dir, listing)))
    except (OSError, ValueError) as err:
        raise DataError(f"index {index_dir} is incomplete (run flam-search index again): {err}") from err
    if len(entries) == 0:
        return []
    model = model or FLAM.load(meta["model"])
    query = model.embed_text([text])
    similarity = matrix @ query.emb[0]
    order = np.argsort(-similarity, kind="stable")[:top]
    hits = []
    for i in order.tolist():
        entry = entries[i]
        item = _load_npz(paths.join(index_dir, entry["item"]))
        windows = WindowEmbedding(
            entry["path"],
            float(entry["duration_s"]),
            int(item["num_samples"]),
            item["starts"].tolist(),
            item["frames"].astype(np.float32),
            item["global_"],
        )
        timeline = model.window_scores(windows, query)
        onset, offset, peak = best_span(
            timeline.scores[0], 1 / timeline.frame_rate_hz, windows.duration_s, threshold
        )
        hits.append(
            {
                "path": paths.join(meta["audio_dir"], entry["path"]),
                "score": float(similarity[i]),
                "onset": round(onset, 6),
                "offset": round(offset, 6),
                "peak": peak,
            }
        )
    return hits
