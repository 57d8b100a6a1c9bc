"""Zero-shot classification: argmax over classes of cos(global audio, prompt embedding).

Each class name is put into a template (default ``"This is a sound of {}."``, common for
CLAP models; the paper's is unknown) and embedded; a clip's prediction is the class whose
prompt embedding is closest to its global audio embedding. The whole dataset is scored at
once (no folds: nothing is trained).
"""

from collections.abc import Sequence

import numpy as np

from flam_jax.errors import InputError

DEFAULT_TEMPLATE = "This is a sound of {}."


def class_prompts(class_names: Sequence[str], template: str = DEFAULT_TEMPLATE) -> list[str]:
    """One prompt per class; ``_`` in names (e.g. ``dog_bark``) becomes a space."""
    if "{}" not in template:
        raise InputError(f"prompt template {template!r} has no '{{}}' for the class name")
    return [template.format(name.replace("_", " ")) for name in class_names]


def zeroshot_metrics(audio_emb: np.ndarray, class_emb: np.ndarray, labels: np.ndarray) -> dict:
    """``accuracy`` (top-1), ``top5``, ``balanced_accuracy`` (mean per-class recall), predictions."""
    audio_emb = np.asarray(audio_emb, dtype=np.float64)
    class_emb = np.asarray(class_emb, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if audio_emb.ndim != 2 or class_emb.ndim != 2 or audio_emb.shape[1] != class_emb.shape[1]:
        raise InputError(f"embeddings must be [N, D] and [C, D], got {audio_emb.shape} and {class_emb.shape}")
    if labels.shape != (len(audio_emb),):
        raise InputError(f"{labels.size} labels for {len(audio_emb)} clips")
    num_classes = len(class_emb)
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise InputError(f"labels must lie in 0..{num_classes - 1}")
    sim = audio_emb @ class_emb.T
    predictions = np.argmax(sim, axis=1)
    own = sim[np.arange(len(labels)), labels]
    rank = 1 + (sim > own[:, None]).sum(1)
    correct = predictions == labels
    per_class = np.array([correct[labels == c].mean() for c in range(num_classes) if (labels == c).any()])
    return {
        "accuracy": float(correct.mean()),
        "top5": float(np.mean(rank <= 5)),
        "balanced_accuracy": float(per_class.mean()),
        "predictions": predictions,
    }
