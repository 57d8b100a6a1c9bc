"""A search index of a folder of recordings, and finding files (and moments) by text (flam-search).

INDEX/ holds ``index.json`` (model, audio folder, hop), ``manifest.jsonl`` (one line per
file as it is done: its item or its error; the last line of a path wins),
``items/<n>.npz`` (window frame embeddings [W, F, D] float16, window starts, length,
global embedding) and ``globals.npy`` + ``globals.json`` (all global embeddings, written
at the end of each indexing run). Indexing again with the same model skips finished files
and retries failed ones, so an interrupted run resumes. Files are found recursively by
audio extension; unreadable ones are skipped and listed at the end (exit 1).

A query ranks files by the cosine of the text and global embeddings and gives each
hit's best span: the run of median-filtered frame scores above the threshold around the
peak frame (the peak frame alone if nothing is above).

``index.json`` carries the format version (``VERSION``, now 2: global embeddings by the
timeline's global rule, the one evaluation uses). Resuming into an index of another
version is refused with one line; build a new one with another ``--out``.
"""

from __future__ import annotations

import io
import json
import os
import sys

import numpy as np
from tqdm import tqdm

from flam_jax import paths
from flam_jax.errors import DataError, FlamError, InputError
from flam_jax.infer.api import FLAM, WindowEmbedding
from flam_jax.jsonfile import read_json
from flam_jax.timeline import median_filter

FORMAT = "flam_jax.search"
VERSION = 2  # 2: global embeddings by the timeline's global rule (1: zero-padded windows)
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".au", ".w64", ".caf")


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
    path = paths.join(index_dir, "manifest.jsonl")
    if not paths.exists(path):
        return entries
    for line in paths.read_text(path).splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        entries[entry["path"]] = entry
    return entries


def _open_index(index_dir: str, model_dir: str, audio_dir: str, hop_s: float) -> None:
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "model": paths.resolve(model_dir),
        "audio_dir": paths.resolve(audio_dir),
        "hop_s": hop_s,
    }
    path = paths.join(index_dir, "index.json")
    if paths.exists(path):
        old = read_index_meta(index_dir)
        if old.get("version") != VERSION:
            raise InputError(
                f"{index_dir} is a version {old.get('version')} index (this is version {VERSION}: "
                "global embeddings by the timeline's rule); use another --out"
            )
        if (old["model"], old["audio_dir"], old["hop_s"]) != (meta["model"], meta["audio_dir"], hop_s):
            raise InputError(
                f"{index_dir} was built from {old['audio_dir']} with model {old['model']} at hop "
                f"{old['hop_s']} s; use another --out to index differently"
            )
        return
    paths.makedirs(paths.join(index_dir, "items"))
    paths.write_text(path, json.dumps(meta, indent=1))


def read_index_meta(index_dir: str) -> dict:
    path = paths.join(index_dir, "index.json")
    if not paths.exists(path):
        raise InputError(f"{index_dir} is not a flam-search index (no index.json)")
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
):
    """Embed every audio file; returns (newly indexed, skipped as done, [(path, error)]).

    ``model``: an already loaded ``FLAM`` of ``model_dir`` (reuses its compiled functions).
    """
    files = find_audio(audio_dir)
    model = model or FLAM.load(model_dir, max_batch=batch_size)
    _open_index(index_dir, model_dir, audio_dir, hop_s)
    done = {
        p: e
        for p, e in read_manifest(index_dir).items()
        if "item" in e and paths.exists(paths.join(index_dir, e["item"]))
    }
    todo = [p for p in files if p not in done]
    next_id = 1 + max((int(os.path.basename(e["item"]).split(".")[0]) for e in done.values()), default=-1)
    failures = []
    manifest = paths.AppendLog(paths.join(index_dir, "manifest.jsonl"))
    manifest.end_line()
    try:
        for rel in tqdm(todo, desc="indexing", unit="file", disable=not progress, file=sys.stderr):
            try:
                emb = model.embed_windows(paths.join(audio_dir, rel), hop_s=hop_s)
            except FlamError as err:
                failures.append((rel, str(err)))
                manifest.write(json.dumps({"path": rel, "error": str(err)}) + "\n")
                manifest.flush()
                continue
            item = f"items/{next_id:07d}.npz"
            next_id += 1
            arrays = {
                "frames": emb.frames.astype(np.float16),
                "starts": np.asarray(emb.starts, np.int64),
                "num_samples": np.int64(emb.num_samples),
                "global_": emb.global_,
            }
            paths.write_bytes(paths.join(index_dir, item), _npz_bytes(arrays))
            manifest.write(json.dumps({"path": rel, "item": item, "duration_s": emb.duration_s}) + "\n")
            manifest.flush()
    finally:
        manifest.close()
    _write_globals(index_dir)
    return len(todo) - len(failures), len(done), failures


def _npz_bytes(arrays: dict) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _load_npz(path: str):
    return np.load(io.BytesIO(paths.read_bytes(path)))


def _write_globals(index_dir: str) -> None:
    entries = [e for e in read_manifest(index_dir).values() if "item" in e]
    globals_ = [_load_npz(paths.join(index_dir, e["item"]))["global_"] for e in entries]
    matrix = np.stack(globals_) if globals_ else np.zeros((0, 0), np.float32)
    buffer = io.BytesIO()
    np.save(buffer, matrix)
    paths.write_bytes(paths.join(index_dir, "globals.npy"), buffer.getvalue())
    paths.write_text(paths.join(index_dir, "globals.json"), json.dumps(entries))


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
    try:
        matrix = np.load(io.BytesIO(paths.read_bytes(paths.join(index_dir, "globals.npy"))))
        entries = json.loads(paths.read_text(paths.join(index_dir, "globals.json")))
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
