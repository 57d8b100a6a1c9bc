"""Run a model over a standard benchmark: metrics, curves and examples (``flam-evaluate``).

The model is any object with the FLAM API (``flam_jax.infer.api.FLAM``):
``embed_audio(wave [B, 480000]) -> .frames, .global_``, ``embed_text(texts) -> .emb …``
and ``frame_scores(audio_emb, text_emb) -> [B, N, F]``; ``evaluate`` takes it directly,
so tests run it with a small or fake model.

Audio follows ``flam_jax.timeline`` (FLAM_SPEC §7 leaves long audio to the implementation):
- SED: a clip is cut into 10 s windows (hop 10 s), each zero-padded to one window and
  scored as a clip of its own; events are cut at window edges; a final window with at
  most 0.5 s of audio is dropped. Clips of ≤ 10 s are one window.
- Global embeddings (retrieval, zero-shot): the timeline's global rule, the one
  ``FLAM.embed_windows`` and flam-search use.
- Grounding (AudioGrounding): each (clip, phrase) pair on its own clip, in the SED
  windows; the protocol is ``evals.grounding``'s.
"""

import sys
from collections.abc import Iterator, Sequence

import numpy as np
from tqdm import tqdm

from flam_jax import timeline
from flam_jax.data.builders.common import humanise_label
from flam_jax.data.builders.ontology import label_names
from flam_jax.data.pools import RecordPool
from flam_jax.errors import InputError
from flam_jax.evals import grounding, sed
from flam_jax.evals.benchmarks import Benchmark, Item, get_benchmark, open_source, read_items
from flam_jax.evals.event_based import event_f1, segment_f1
from flam_jax.evals.hook import mixture_queries, simulate_mixtures
from flam_jax.evals.postprocess import events_to_frame_labels, scores_to_events
from flam_jax.evals.report import write_report
from flam_jax.evals.retrieval import retrieval_metrics
from flam_jax.evals.zeroshot import DEFAULT_TEMPLATE, class_prompts, zeroshot_metrics
from flam_jax.timeline import WINDOW_S, WINDOW_SAMPLES

MIN_TAIL = int(0.5 * timeline.SAMPLE_RATE)  # samples: a shorter last SED window is dropped
TEXT_CHUNK = 256
THRESHOLD = 0.5
F1_GRID = np.round(np.linspace(0.0, 1.0, 51), 4)


# --------------------------------------------------------------------------- audio windows


def sed_window_starts(num_samples: int) -> list[int]:
    """Start samples of the SED windows (see the module doc)."""
    return timeline.window_starts(num_samples, WINDOW_SAMPLES, min_tail=MIN_TAIL)


def sed_windows(wave: np.ndarray) -> np.ndarray:
    """[W, 480000]: 10 s windows, zero-padded at the end (see the module doc)."""
    return timeline.cut_windows(wave, sed_window_starts(len(wave)))


def window_events(events, k: int) -> list[tuple[float, float, str]]:
    """Events of window ``k``, cut at its edges and shifted to start at 0."""
    return timeline.events_in_window(events, k * WINDOW_S)


def _batches(windows: Iterator[tuple[int, np.ndarray]], batch_size: int):
    """(owners, waves [batch_size, 480000]); a short last batch is zero-padded so that a
    jitted model sees one shape (callers keep the first ``len(owners)`` rows)."""
    owners, waves = [], []
    for owner, wave in windows:
        owners.append(owner)
        waves.append(wave)
        if len(waves) == batch_size:
            yield owners, np.stack(waves).astype(np.float32)
            owners, waves = [], []
    if waves:
        waves += [np.zeros(WINDOW_SAMPLES, np.float32)] * (batch_size - len(waves))
        yield owners, np.stack(waves).astype(np.float32)


def _progress(total: int, desc: str, enabled: bool):
    return tqdm(total=total, desc=desc, unit="win", disable=not enabled, file=sys.stderr)


# --------------------------------------------------------------------------- model calls


def _embed_texts(model, texts: Sequence[str]) -> list:
    return [model.embed_text(list(texts[i : i + TEXT_CHUNK])) for i in range(0, len(texts), TEXT_CHUNK)]


def score_items(
    model, items: Sequence[Item], queries: Sequence[str], batch_size: int, progress: bool, method="unbiased"
):
    """Frame scores [windows, queries, F] for every SED window, and each window's (item, k);
    ``method`` is ``FLAM.frame_scores``'s ("cosine" for a FLAM-Global model)."""
    text_chunks = _embed_texts(model, queries)
    index = [(i, k) for i, item in enumerate(items) for k in range(len(sed_window_starts(item.num_samples)))]

    def windows():
        for i, item in enumerate(items):
            for w in sed_windows(item.audio()):
                yield i, w

    scores = []
    with _progress(len(index), "scoring", progress) as bar:
        for owners, batch in _batches(windows(), batch_size):
            audio = model.embed_audio(batch)
            block = np.concatenate([np.asarray(model.frame_scores(audio, t, method)) for t in text_chunks], 1)
            scores.append(block[: len(owners)])
            bar.update(len(owners))
    return np.concatenate(scores).astype(np.float32), index


def score_pairs(model, items: Sequence[Item], pairs, batch_size: int, progress: bool, method="unbiased"):
    """Frame scores [files, 1, F] of every grounding pair in each SED window of its own
    clip, and each file's (pair, window k). Each phrase is embedded once, in clip order,
    so one batch of windows needs only a chunk or two of text embeddings; a recording
    that several items (captions) share is read and embedded once."""
    queries = list(dict.fromkeys(pair.query for pair in pairs))
    position = {query: n for n, query in enumerate(queries)}
    text_chunks = _embed_texts(model, queries)
    of_recording: dict[str, list[int]] = {}  # recording → its pairs
    reader: dict[str, int] = {}  # recording → the item whose audio is read
    for n, pair in enumerate(pairs):
        key = items[pair.item].recording or items[pair.item].id
        of_recording.setdefault(key, []).append(n)
        reader.setdefault(key, pair.item)

    def windows():
        for key, i in reader.items():
            for k, w in enumerate(sed_windows(items[i].audio())):
                yield (key, k), w

    total = sum(len(sed_window_starts(items[i].num_samples)) for i in reader.values())
    rows, index = [], []
    with _progress(total, "scoring", progress) as bar:
        for owners, batch in _batches(windows(), batch_size):
            audio = model.embed_audio(batch)
            needed = sorted(
                {position[pairs[n].query] // TEXT_CHUNK for key, _ in owners for n in of_recording[key]}
            )
            blocks = {c: np.asarray(model.frame_scores(audio, text_chunks[c], method)) for c in needed}
            for b, (key, k) in enumerate(owners):
                for n in of_recording[key]:
                    chunk, row = divmod(position[pairs[n].query], TEXT_CHUNK)
                    rows.append(blocks[chunk][b, row])
                    index.append((n, k))
            bar.update(len(owners))
    return np.stack(rows)[:, None, :].astype(np.float32), index


def global_embeddings(model, items: Sequence[Item], batch_size: int, progress: bool) -> np.ndarray:
    """[items, D]: one unit-norm global embedding per item, by the timeline's global rule;
    windows of several items share the model's batches."""

    def windows():
        for i, item in enumerate(items):
            for w in timeline.global_windows(item.audio()):
                yield i, w

    total = sum(len(timeline.global_window_starts(item.num_samples)) for item in items)
    per_item = [[] for _ in items]
    with _progress(total, "embedding", progress) as bar:
        for owners, batch in _batches(windows(), batch_size):
            emb = np.asarray(model.embed_audio(batch).global_)[: len(owners)]
            for owner, row in zip(owners, emb, strict=True):
                per_item[owner].append(row)
            bar.update(len(owners))
    return np.stack([timeline.mean_direction(np.stack(rows)) for rows in per_item])


def text_embeddings(model, texts: Sequence[str]) -> np.ndarray:
    return np.concatenate([np.asarray(t.emb, dtype=np.float64) for t in _embed_texts(model, texts)])


# --------------------------------------------------------------------------- tasks


def sed_metrics(
    scores: np.ndarray, events: Sequence, class_names: Sequence[str], auroc: str
) -> tuple[dict, dict]:
    """All SED metrics for scores [clips, classes, F] and per-clip events; (scalars, curves)."""
    frames = scores.shape[2]
    labels = events_to_frame_labels(events, class_names, frames)
    auc = sed.frame_auroc(scores, labels)
    filtered = timeline.median_filter(scores, 3)
    detected = scores_to_events(scores, class_names, THRESHOLD)  # median filter inside
    durations = [WINDOW_S] * len(scores)
    has_events = any(events)
    metrics = {
        "frame_auroc": auc[auroc],
        "frame_auroc_micro": auc["micro"],
        "frame_auroc_macro": auc["macro"],
        "clips": len(scores),
        "classes": len(class_names),
        "classes_with_events": len({e[2] for clip in events for e in clip}),
        "events": int(sum(len(clip) for clip in events)),
    }
    curves = {
        "roc": sed.roc_curve(scores, labels, bins=2000),
        "frame_f1": sed.frame_f1_curve(scores, labels, F1_GRID),
    }
    if has_events:
        # PSDS1 under both protocols of the literature, from one set of operating points:
        # DCASE's α_st = 1 (FLAM's paper) and α_st = 0 (FineLAP's table).
        points1 = sed.intersection_operating_points(filtered, events, class_names, dtc=0.7, gtc=0.7)
        p1 = sed.psds_from_points(points1, sed.PSDS1)
        metrics["psds1"] = p1["psds"]
        metrics["psds1_alpha_st0"] = sed.psds_from_points(points1, sed.PSDS1_ALPHA_ST0)["psds"]
        metrics["psds2"] = sed.psds(filtered, events, class_names, sed.PSDS2)["psds"]
        points = sed.intersection_operating_points(filtered, events, class_names, dtc=0.5, gtc=0.5)
        f1 = sed.f1_from_points(points, np.r_[THRESHOLD, F1_GRID])
        metrics["intersection_f1_macro"] = float(f1["macro"][0])
        metrics["intersection_f1_micro"] = float(f1["micro"][0])
        curves["intersection_f1"] = {
            "thresholds": F1_GRID,
            "macro": f1["macro"][1:],
            "micro": f1["micro"][1:],
        }
        curves["psd_roc"] = (p1["efpr"], p1["etpr"])
        ev = event_f1(detected, events, class_names)
        seg = segment_f1(detected, events, class_names, durations)
        metrics.update(
            event_f1_macro=ev["macro"],
            event_f1_micro=ev["micro"],
            segment_f1_macro=seg["macro"],
            segment_f1_micro=seg["micro"],
        )
        metrics["mpauc"] = sed.mpauc(scores, events, class_names)
    best = int(np.nanargmax(curves["frame_f1"]["macro"]))
    metrics["frame_f1_macro_at_0.5"] = float(
        curves["frame_f1"]["macro"][np.argmin(np.abs(F1_GRID - THRESHOLD))]
    )
    metrics["best_frame_f1_threshold"] = float(F1_GRID[best])
    metrics["best_frame_f1_macro"] = float(curves["frame_f1"]["macro"][best])
    return metrics, curves


def run_sed(model, items, bench: Benchmark, batch_size: int, progress: bool, names: dict[str, str], method):
    class_names = sorted({e[2] for item in items for e in item.events})
    if not class_names:
        raise InputError(f"{bench.name}: no events in this split, nothing to detect")
    queries = [humanise_label(names.get(c, c)) for c in class_names]
    scores, index = score_items(model, items, queries, batch_size, progress, method)
    events = [window_events(items[i].events, k) for i, k in index]
    metrics, curves = sed_metrics(scores, events, class_names, bench.auroc)
    examples = _examples(scores, events, class_names, [f"{items[i].id}@{10 * k}s" for i, k in index])
    return metrics, curves, examples


def _examples(scores, events, class_names, names, count: int = 4) -> list[dict]:
    """A few clips with the most events, for activation-map plots."""
    order = np.argsort([-len(e) for e in events], kind="stable")[:count]
    labels = events_to_frame_labels(events, class_names, scores.shape[2])
    out = []
    for n in order:
        active = sorted({class_names.index(e[2]) for e in events[n]}) or [int(np.argmax(scores[n].max(1)))]
        top = np.argsort(-scores[n].max(1))[:4]
        rows = list(dict.fromkeys([*active, *top.tolist()]))[:8]
        out.append(
            {
                "name": names[n],
                "queries": [class_names[r] for r in rows],
                "scores": scores[n, rows],
                "labels": labels[n, rows],
            }
        )
    return out


def run_grounding(model, items, bench: Benchmark, batch_size: int, progress: bool, method="unbiased"):
    pair_list = grounding.pairs(items)
    if not pair_list:
        raise InputError(f"{bench.name}: no phrases in this split, nothing to ground")
    scores, index = score_pairs(model, items, pair_list, batch_size, progress, method)
    events = [window_events(pair_list[n].events, k) for n, k in index]
    metrics, curves = sed_metrics(scores, events, [grounding.CLASS], bench.auroc)
    metrics.update(items=len(items), pairs=len(pair_list), files=len(scores))
    return metrics, curves, grounding.examples(items, pair_list, index, scores, events)


def run_retrieval(model, items, bench: Benchmark, batch_size: int, progress: bool):
    captions, owner = [], []
    for i, item in enumerate(items):
        captions += item.captions
        owner += [i] * len(item.captions)
    if not captions:
        raise InputError(f"{bench.name}: no captions in this split")
    audio = global_embeddings(model, items, batch_size, progress)
    out = retrieval_metrics(audio, text_embeddings(model, captions), np.array(owner))
    metrics = {f"{d}_{k}": v for d in ("t2a", "a2t") for k, v in out[d].items()}
    metrics.update(clips=len(items), captions=len(captions))
    return metrics, {}, []


def run_zeroshot(model, items, bench: Benchmark, batch_size: int, progress: bool, template: str):
    ids = sorted({(item.label_id, item.label) for item in items})
    names = [name for _, name in ids]
    if len({i for i, _ in ids}) != len(ids) or len(set(names)) != len(names):
        raise InputError(f"{bench.name}: class ids and names do not match one to one")
    position = {label_id: k for k, (label_id, _) in enumerate(ids)}
    audio = global_embeddings(model, items, batch_size, progress)
    classes = text_embeddings(model, class_prompts(names, template))
    out = zeroshot_metrics(audio, classes, np.array([position[item.label_id] for item in items]))
    metrics = {k: v for k, v in out.items() if k != "predictions"}
    metrics.update(clips=len(items), classes=len(names), template=template)
    return metrics, {}, []


def run_simulated(
    model, source, bench: Benchmark, batch_size: int, progress: bool, count: int, seed: int, method="unbiased"
):
    mixtures = simulate_mixtures(RecordPool.from_records(source), count, seed)
    queries, labels = mixture_queries(mixtures)
    items = [
        Item(id=f"mixture{m:05d}", audio=(lambda m=m: mixtures[m].audio), num_samples=WINDOW_SAMPLES)
        for m in range(len(mixtures))
    ]
    scores, _ = score_items(model, items, queries, batch_size, progress, method)
    events = _labels_to_events(labels, queries)
    metrics, curves = sed_metrics(scores, events, queries, bench.auroc)
    metrics.update(mixtures=count, seed=seed)
    return metrics, curves, _examples(scores, events, queries, [i.id for i in items])


def _labels_to_events(labels: np.ndarray, queries: Sequence[str]) -> list[list[tuple[float, float, str]]]:
    """Frame labels [clips, queries, F] → events on the frame grid (for the event metrics)."""
    events = [[] for _ in range(labels.shape[0])]
    for r, onset, offset in timeline.run_times(labels):
        events[r // labels.shape[1]].append((onset, offset, queries[r % labels.shape[1]]))
    return events


def evaluate(
    model,
    benchmark: str,
    data_dir: str,
    *,
    out_dir: str | None = None,
    split: str | None = None,
    batch_size: int = 8,
    template: str = DEFAULT_TEMPLATE,
    mixtures: int = 200,
    seed: int = 0,
    cache_dir: str | None = None,
    label_file: str | None = None,
    progress: bool = False,
    method: str = "unbiased",
) -> dict:
    """Run ``benchmark`` with ``model``; returns the metrics and writes the report to ``out_dir``."""
    bench = get_benchmark(benchmark)
    if batch_size < 1:
        raise InputError(f"batch size must be positive, got {batch_size}")
    source, used_split = open_source(bench, data_dir, split, cache_dir)
    if len(source) == 0:
        raise InputError(f"{bench.name}: split {used_split!r} is empty")
    if bench.task == "sed-open":
        metrics, curves, examples = run_simulated(
            model, source, bench, batch_size, progress, mixtures, seed, method
        )
    elif bench.task == "sed":
        names = label_names(data_dir, label_file)
        metrics, curves, examples = run_sed(
            model, read_items(source), bench, batch_size, progress, names, method
        )
    elif bench.task == "grounding":
        metrics, curves, examples = run_grounding(
            model, read_items(source), bench, batch_size, progress, method
        )
    elif bench.task == "retrieval":
        metrics, curves, examples = run_retrieval(model, read_items(source), bench, batch_size, progress)
    else:
        metrics, curves, examples = run_zeroshot(
            model, read_items(source), bench, batch_size, progress, template
        )
    result = {"benchmark": bench.name, "split": used_split, "task": bench.task, "metrics": metrics}
    if out_dir:
        write_report(out_dir, result, curves, examples)
    return result
