"""Text↔audio retrieval metrics with several captions per clip (LAION-CLAP convention).

Inputs: global audio embeddings [A, D], caption embeddings [T, D] and, for each caption,
the index of its clip. Similarity is the dot product (the embeddings are unit-norm, so it
is the cosine). Ties in similarity are broken by index (a stable descending sort).

- Text→audio: every caption is a query ranked against all clips; its clip is the only
  relevant item. R@k = fraction of captions whose clip ranks ≤ k; mAP@10 = mean of 1/rank
  when rank ≤ 10, else 0.
- Audio→text: every clip is a query ranked against all captions; its captions (usually 5)
  are relevant. R@k = fraction of clips with at least one of their captions in the top k
  (ranx ``hit_rate@k``); mAP@10 = Σ over relevant captions ranked ≤ 10 of the precision
  at their rank, divided by the clip's number of captions (ranx ``map@10``).
"""

import numpy as np

from flam_jax.errors import InputError

KS = (1, 5, 10)


def _ranks(sim: np.ndarray, rows: np.ndarray, cols: np.ndarray, chunk: int = 1024) -> np.ndarray:
    """1-based rank of item ``cols[i]`` in row ``rows[i]`` of ``sim`` (ties by column index)."""
    out = np.empty(len(rows), dtype=np.int64)
    index = np.arange(sim.shape[1])
    for s in range(0, len(rows), chunk):
        r, c = rows[s : s + chunk], cols[s : s + chunk]
        row_sim = sim[r]
        own = row_sim[np.arange(len(r)), c][:, None]
        ahead = (row_sim > own) | ((row_sim == own) & (index[None, :] < c[:, None]))
        out[s : s + chunk] = 1 + ahead.sum(1)
    return out


def retrieval_metrics(audio_emb: np.ndarray, text_emb: np.ndarray, caption_clip: np.ndarray) -> dict:
    """``{"t2a": {"R@1", "R@5", "R@10", "mAP@10", "mean_rank", "median_rank"}, "a2t": {…}}``."""
    audio_emb = np.asarray(audio_emb, dtype=np.float64)
    text_emb = np.asarray(text_emb, dtype=np.float64)
    caption_clip = np.asarray(caption_clip, dtype=np.int64)
    if audio_emb.ndim != 2 or text_emb.ndim != 2 or audio_emb.shape[1] != text_emb.shape[1]:
        raise InputError(f"embeddings must be [A, D] and [T, D], got {audio_emb.shape} and {text_emb.shape}")
    if caption_clip.shape != (len(text_emb),):
        raise InputError(f"caption_clip must give one clip index per caption ({len(text_emb)})")
    num_clips = len(audio_emb)
    if len(caption_clip) and (caption_clip.min() < 0 or caption_clip.max() >= num_clips):
        raise InputError(f"caption_clip indexes clips outside 0..{num_clips - 1}")
    captions_per_clip = np.bincount(caption_clip, minlength=num_clips)
    if (captions_per_clip == 0).any():
        raise InputError(f"{int((captions_per_clip == 0).sum())} clips have no caption")

    t2a_sim = text_emb @ audio_emb.T  # [T, A]
    t2a_rank = _ranks(t2a_sim, np.arange(len(text_emb)), caption_clip)
    t2a = {f"R@{k}": float(np.mean(t2a_rank <= k)) for k in KS}
    t2a["mAP@10"] = float(np.mean(np.where(t2a_rank <= 10, 1.0 / t2a_rank, 0.0)))

    a2t_sim = t2a_sim.T  # [A, T]
    a2t_rank = _ranks(a2t_sim, caption_clip, np.arange(len(text_emb)))  # rank of each caption for its clip
    best = np.full(num_clips, np.iinfo(np.int64).max)
    np.minimum.at(best, caption_clip, a2t_rank)
    a2t = {f"R@{k}": float(np.mean(best <= k)) for k in KS}
    # Precision at a relevant caption's rank = (relevant captions ranked at or above it) / rank.
    order = np.lexsort((a2t_rank, caption_clip))
    clip_sorted, rank_sorted = caption_clip[order], a2t_rank[order]
    position = np.arange(len(order)) - np.searchsorted(clip_sorted, clip_sorted, "left") + 1
    precision = np.where(rank_sorted <= 10, position / rank_sorted, 0.0)
    a2t["mAP@10"] = float(np.mean(np.bincount(clip_sorted, precision, num_clips) / captions_per_clip))

    for out, ranks in ((t2a, t2a_rank), (a2t, best)):
        out["mean_rank"] = float(ranks.mean())
        out["median_rank"] = float(np.median(ranks))
    return {"t2a": t2a, "a2t": a2t}
