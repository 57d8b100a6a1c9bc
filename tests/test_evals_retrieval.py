"""Retrieval metrics equal ranx; zero-shot accuracy from class prompts."""

import numpy as np
import pytest

from flam_jax.errors import InputError
from flam_jax.evals.retrieval import retrieval_metrics
from flam_jax.evals.zeroshot import DEFAULT_TEMPLATE, class_prompts, zeroshot_metrics


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _case(seed, clips=40, captions_per_clip=(5,), dim=16, signal=0.6):
    rng = np.random.default_rng(seed)
    audio = _unit(rng.normal(size=(clips, dim)))
    counts = rng.choice(captions_per_clip, size=clips)
    caption_clip = np.repeat(np.arange(clips), counts)
    text = _unit(signal * audio[caption_clip] + rng.normal(size=(len(caption_clip), dim)))
    return audio, text, caption_clip


@pytest.mark.parametrize(("seed", "counts"), [(0, (5,)), (1, (1, 3, 5)), (2, (2,))])
def test_retrieval_equals_ranx(seed, counts):
    from ranx import Qrels, Run, evaluate

    audio, text, caption_clip = _case(seed, captions_per_clip=counts)
    ours = retrieval_metrics(audio, text, caption_clip)
    sim = text @ audio.T
    t2a_qrels = Qrels.from_dict({f"t{i}": {f"a{c}": 1} for i, c in enumerate(caption_clip)})
    t2a_run = Run.from_dict(
        {f"t{i}": {f"a{j}": float(sim[i, j]) for j in range(len(audio))} for i in range(len(text))}
    )
    ref = evaluate(t2a_qrels, t2a_run, ["recall@1", "recall@5", "recall@10", "map@10"])
    for k in (1, 5, 10):
        assert abs(ours["t2a"][f"R@{k}"] - ref[f"recall@{k}"]) <= 1e-6
    assert abs(ours["t2a"]["mAP@10"] - ref["map@10"]) <= 1e-6

    a2t_qrels = Qrels.from_dict(
        {f"a{a}": {f"t{i}": 1 for i in np.flatnonzero(caption_clip == a)} for a in range(len(audio))}
    )
    a2t_run = Run.from_dict(
        {f"a{a}": {f"t{i}": float(sim[i, a]) for i in range(len(text))} for a in range(len(audio))}
    )
    ref = evaluate(a2t_qrels, a2t_run, ["hit_rate@1", "hit_rate@5", "hit_rate@10", "map@10"])
    for k in (1, 5, 10):
        assert abs(ours["a2t"][f"R@{k}"] - ref[f"hit_rate@{k}"]) <= 1e-6
    assert abs(ours["a2t"]["mAP@10"] - ref["map@10"]) <= 1e-6
    assert 0 < ours["t2a"]["R@1"] < 1 and 0 < ours["a2t"]["R@1"] < 1  # not a degenerate case


def test_retrieval_perfect_and_bad_input():
    audio = np.eye(4)
    caption_clip = np.array([0, 0, 1, 2, 3])
    out = retrieval_metrics(audio, audio[caption_clip], caption_clip)
    assert out["t2a"]["R@1"] == 1.0 and out["a2t"]["R@1"] == 1.0 and out["a2t"]["mAP@10"] == 1.0
    with pytest.raises(InputError):
        retrieval_metrics(audio, audio[:3], np.array([0, 1, 2]))  # clip 3 has no caption
    with pytest.raises(InputError):
        retrieval_metrics(audio, audio[:, :2], caption_clip)


def test_zeroshot_accuracy_and_prompts():
    assert class_prompts(["dog_bark", "rain"]) == ["This is a sound of dog bark.", "This is a sound of rain."]
    assert class_prompts(["x"], "a {} sound") == ["a x sound"]
    assert DEFAULT_TEMPLATE == "This is a sound of {}."
    with pytest.raises(InputError):
        class_prompts(["x"], "no placeholder")
    rng = np.random.default_rng(0)
    classes = _unit(rng.normal(size=(6, 8)))
    labels = rng.integers(0, 6, size=50)
    audio = _unit(classes[labels] * 0.8 + rng.normal(size=(50, 8)) * 0.5)
    out = zeroshot_metrics(audio, classes, labels)
    expected = np.mean(np.argmax(audio @ classes.T, 1) == labels)
    assert out["accuracy"] == pytest.approx(expected)
    assert out["accuracy"] <= out["top5"] <= 1.0
    with pytest.raises(InputError):
        zeroshot_metrics(audio, classes, labels[:-1])
