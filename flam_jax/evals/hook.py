"""The trainer's validation hook: frame AUROC on a fixed set of simulated mixtures.

    mixtures = simulate_mixtures(pool, count=64, seed=1234)   # fixed once
    eval_fn = validation_hook(mixtures, tokenizer)            # trainer calls eval_fn(model, step)

Queries are the distinct (normalised) captions of all mixtures' events, every caption of
each event's clip included; a mixture's label for a query is the OR of the frame labels of
its events that the query describes (any caption of the event's clip: "a cymbal" is true
of a hi-hat recording captioned "a hi-hat cymbal" too), so every other caption is a
negative query (open vocabulary: AUROC pooled, "micro").
"""

from collections.abc import Callable, Sequence

import numpy as np

from flam_jax.data import simulate as sim
from flam_jax.data.batches import normalise_caption
from flam_jax.data.pools import ClipPool
from flam_jax.errors import InputError
from flam_jax.evals.sed import frame_auroc

ScoreFn = Callable[[np.ndarray, Sequence[str]], np.ndarray]  # (audio [B,480000], texts) -> [B,N,F]


def simulate_mixtures(pool: ClipPool, count: int, seed: int, cfg: sim.SimulatorConfig | None = None):
    """``count`` mixtures, a deterministic function of (pool, seed)."""
    cfg = cfg or sim.SimulatorConfig()
    if len(pool) == 0:
        raise InputError("cannot simulate mixtures from an empty clip pool")
    return [sim.simulate_index(pool, seed, i, cfg) for i in range(count)]


def mixture_queries(mixtures: Sequence[sim.Mixture]) -> tuple[list[str], np.ndarray]:
    """(queries, labels [mixtures, queries, frames] uint8) over the mixtures' distinct captions."""
    spelling: dict[str, str] = {}
    for m in mixtures:
        for k in range(len(m.captions)):
            for caption in m.event_captions(k):
                spelling.setdefault(normalise_caption(caption), caption)
    keys = sorted(spelling)
    column = {k: j for j, k in enumerate(keys)}
    frames = mixtures[0].labels.shape[1] if mixtures and mixtures[0].labels.size else 32
    labels = np.zeros((len(mixtures), len(keys), frames), dtype=np.uint8)
    for i, m in enumerate(mixtures):
        for k, row in enumerate(m.labels):
            for caption in m.event_captions(k):
                labels[i, column[normalise_caption(caption)]] |= row.astype(np.uint8)
    return [spelling[k] for k in keys], labels


def frame_auroc_hook(score_fn: ScoreFn, mixtures: Sequence[sim.Mixture], *, batch_size: int = 8) -> dict:
    """``{"frame_auroc_micro", "frame_auroc_macro"}`` of ``score_fn`` on ``mixtures``."""
    queries, labels = mixture_queries(mixtures)
    if not queries:
        raise InputError("the validation mixtures hold no events")
    scores = []
    for s in range(0, len(mixtures), batch_size):
        audio = np.stack([m.audio for m in mixtures[s : s + batch_size]]).astype(np.float32)
        scores.append(np.asarray(score_fn(audio, queries), dtype=np.float32))
    out = frame_auroc(np.concatenate(scores), labels)
    return {"frame_auroc_micro": out["micro"], "frame_auroc_macro": out["macro"]}


def model_score_fn(model, tokenizer) -> ScoreFn:
    """A score function for a ``models.flam.FlamModel``: texts are embedded once per set of
    queries, and an ``nnx.Module`` runs under ``nnx.jit``."""
    from flax import nnx

    def embed_text(model, ids, mask):
        return model.embed_text(ids, mask)

    def scores(model, audio, emb, alpha, beta):
        frames, _ = model.embed_audio(audio)
        return model.frame_scores(frames, emb, alpha, beta)

    if isinstance(model, nnx.Module):
        embed_text, scores = nnx.jit(embed_text), nnx.jit(scores)
    cache: dict[tuple[str, ...], tuple] = {}

    def score(audio, texts):
        key = tuple(texts)
        if key not in cache:
            cache.clear()
            ids, mask = tokenizer.encode(list(texts))
            cache[key] = embed_text(model, ids, mask)
        return np.asarray(scores(model, audio, *cache[key]))

    return score


def validation_hook(mixtures: Sequence[sim.Mixture], tokenizer, *, batch_size: int = 8):
    """``eval_fn(model, step) -> dict`` for ``train.trainer`` (keys become ``eval/...``)."""

    def eval_fn(model, step):
        del step
        return frame_auroc_hook(model_score_fn(model, tokenizer), mixtures, batch_size=batch_size)

    return eval_fn
