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

import jax
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

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


class ValidationHook:
    """``hook(model, step) -> {"frame_auroc_micro", "frame_auroc_macro"}`` on fixed mixtures.

    Built once per run: queries, token ids and the audio batches are prepared here, and the
    two jitted functions (texts → embeddings, audio batch → scores) are traced on the first
    call and reused after (the last batch is padded, so one shape). They take the model's
    state as an argument, so parameters split over the devices of several processes are
    fine: every input is a replicated global array and every output is replicated, which
    each process reads whole.
    """

    def __init__(self, mixtures: Sequence[sim.Mixture], tokenizer, *, batch_size: int = 8):
        self.queries, self.labels = mixture_queries(mixtures)
        if not self.queries:
            raise InputError("the validation mixtures hold no events")
        self.ids, self.mask = (np.asarray(x, np.int32) for x in tokenizer.encode(self.queries))
        audio = np.stack([m.audio for m in mixtures]).astype(np.float32)
        padded = -(-len(audio) // batch_size) * batch_size
        self.count, self.batch_size = len(audio), batch_size
        self.audio = np.concatenate([audio, np.zeros((padded - len(audio), audio.shape[1]), np.float32)])
        self._graphdef = None

    def _compile(self, graphdef, state) -> None:
        shardings = [getattr(leaf, "sharding", None) for leaf in jax.tree.leaves(state)]
        mesh = next((s.mesh for s in shardings if isinstance(s, NamedSharding)), None)
        self._replicated = NamedSharding(mesh, PartitionSpec()) if mesh is not None else None
        out = {} if self._replicated is None else {"out_shardings": self._replicated}

        def embed_text(state, ids, mask):
            return nnx.merge(graphdef, state).embed_text(ids, mask)

        def scores(state, audio, emb, alpha, beta):
            model = nnx.merge(graphdef, state)
            frames, _ = model.embed_audio(audio)
            return model.frame_scores(frames, emb, alpha, beta)

        self.embed_text, self.scores = jax.jit(embed_text, **out), jax.jit(scores, **out)
        self._graphdef = graphdef

    def _place(self, x: np.ndarray):
        if self._replicated is None:
            return x
        return jax.make_array_from_process_local_data(self._replicated, x, x.shape)

    def __call__(self, model, step=None) -> dict:
        graphdef, state = nnx.split(model)
        if graphdef != self._graphdef:
            self._compile(graphdef, state)
        emb, alpha, beta = self.embed_text(state, self._place(self.ids), self._place(self.mask))
        out = []
        for start in range(0, len(self.audio), self.batch_size):
            batch = self._place(self.audio[start : start + self.batch_size])
            out.append(np.asarray(self.scores(state, batch, emb, alpha, beta), dtype=np.float32))
        result = frame_auroc(np.concatenate(out)[: self.count], self.labels)
        return {"frame_auroc_micro": result["micro"], "frame_auroc_macro": result["macro"]}


def validation_hook(mixtures: Sequence[sim.Mixture], tokenizer, *, batch_size: int = 8) -> ValidationHook:
    """``eval_fn(model, step) -> dict`` for ``train.trainer`` (keys become ``eval/...``)."""
    return ValidationHook(mixtures, tokenizer, batch_size=batch_size)
