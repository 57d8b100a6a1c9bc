"""InfoNCE / sigmoid global losses, the prior loss and the weighted total."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from jax.sharding import Mesh

from flam_jax.config import base_config
from flam_jax.errors import ConfigError, InputError
from flam_jax.losses.contrastive import clip_loss, clip_loss_sharded, sigmoid_loss
from flam_jax.losses.framewise import SedBatch, framewise_loss_dense
from flam_jax.losses.prior import positive_ratio, prior_loss
from flam_jax.losses.total import LossSettings, flam_loss


def _unit(x):
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def _assert_rel(actual, expected, rtol=1e-5):
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert np.all(np.isfinite(actual))
    err = np.max(np.abs(actual - expected))
    assert err <= rtol * max(np.max(np.abs(expected)), 1e-6), (err, np.max(np.abs(expected)))


def _pairs(batch=16, dims=8, seed=0):
    rng = np.random.default_rng(seed)
    return _unit(rng.normal(size=(batch, dims))), _unit(rng.normal(size=(batch, dims)))


def _log_softmax(x, axis):
    return (
        x
        - np.log(np.sum(np.exp(x - x.max(axis, keepdims=True)), axis, keepdims=True))
        - x.max(axis, keepdims=True)
    )


def test_clip_loss_is_symmetric_cross_entropy():
    audio, text = _pairs()
    scale = np.log(1 / 0.07)
    logits = np.exp(scale) * audio.astype(np.float64) @ text.T
    want = -0.5 * (np.mean(np.diag(_log_softmax(logits, 1))) + np.mean(np.diag(_log_softmax(logits, 0))))
    _assert_rel(clip_loss(audio, text, scale), want)
    # The clamp caps τ, and the gradient of a clamped log τ is zero.
    _assert_rel(clip_loss(audio, text, 5.0, max_scale=10.0), clip_loss(audio, text, np.log(10.0)))
    assert float(jax.grad(lambda s: clip_loss(audio, text, s, max_scale=10.0))(5.0)) == 0.0


@pytest.mark.parametrize(
    "shape,axes",
    [((1,), ("data",)), ((2,), ("data",)), ((4,), ("data",)), ((8,), ("data",)), ((4, 2), ("data", "fsdp"))],
)
def test_sharded_clip_loss_matches_global(shape, axes):
    mesh = Mesh(np.array(jax.devices()[: int(np.prod(shape))]).reshape(shape), axes)
    audio, text = _pairs(seed=len(shape) + shape[0])
    scale = jnp.float32(2.3)
    argnums = (0, 1, 2)
    want = jax.jit(jax.value_and_grad(clip_loss, argnums))(audio, text, scale)
    got = jax.jit(
        jax.value_and_grad(lambda a, t, s: clip_loss_sharded(a, t, s, mesh=mesh, batch_axes=axes), argnums)
    )(audio, text, scale)
    _assert_rel(got[0], want[0])
    for g, w in zip(got[1], want[1], strict=True):
        _assert_rel(g, w)
    assert abs(float(got[1][2])) > 0  # the temperature is learned


def test_sigmoid_loss_matches_formula():
    audio, text = _pairs(batch=6)
    logits = 10.0 * audio.astype(np.float64) @ text.T - 3.0
    signs = 2 * np.eye(6) - 1
    want = np.sum(np.logaddexp(0, -signs * logits)) / 6
    _assert_rel(sigmoid_loss(audio, text, np.log(10.0), -3.0), want)


def test_global_losses_reject_mismatched_batches():
    audio, text = _pairs()
    with pytest.raises(InputError, match="global batch"):
        clip_loss(audio, text[:4], 1.0)


def _sed(num_blocks=2, na=3, nt=4, frames=5, dims=8, seed=0) -> SedBatch:
    rng = np.random.default_rng(seed)
    audio_mask = rng.random(num_blocks * na) > 0.3
    labels = (rng.random((num_blocks * na, nt, frames)) > 0.5).astype(np.float32)
    labels[~audio_mask] = 0
    return SedBatch(
        frames=_unit(rng.normal(size=(num_blocks * na, frames, dims))),
        audio_mask=audio_mask,
        text_emb=_unit(rng.normal(size=(num_blocks * nt, dims))),
        alpha=rng.uniform(1, 10, num_blocks * nt).astype(np.float32),
        beta=rng.normal(size=num_blocks * nt).astype(np.float32),
        text_mask=np.array([True, True, True, False] * num_blocks),
        caption_ids=np.arange(num_blocks * nt, dtype=np.int32),
        labels=labels,
    )


def test_prior_loss_targets_global_positive_ratio():
    sed = _sed()
    ratio = np.asarray(positive_ratio(sed.labels, sed.audio_mask, num_blocks=2))
    # Text j of block b: its positives among block b's clips over T · all valid clips.
    for b in range(2):
        for j in range(4):
            want = sed.labels[b * 3 : (b + 1) * 3, j].sum() / (5 * sed.audio_mask.sum())
            assert abs(ratio[b * 4 + j] - want) < 1e-6
    beta = sed.beta.astype(np.float64)
    bce = -(ratio * np.log(1 / (1 + np.exp(-beta))) + (1 - ratio) * np.log(1 / (1 + np.exp(beta))))
    want = np.sum(bce * sed.text_mask) / sed.text_mask.sum()
    _assert_rel(prior_loss(sed.beta, sed.labels, sed.audio_mask, sed.text_mask, num_blocks=2), want)
    grad = jax.grad(prior_loss)(sed.beta, sed.labels, sed.audio_mask, sed.text_mask, num_blocks=2)
    assert np.all(np.asarray(grad)[~sed.text_mask] == 0) and np.all(np.asarray(grad)[sed.text_mask] != 0)


def test_prior_reference_normalizer_averages_device_means():
    sed = _sed()
    mask = sed.text_mask.copy()
    mask[1] = False  # block 0 now has fewer valid texts than block 1
    ref = prior_loss(sed.beta, sed.labels, sed.audio_mask, mask, num_blocks=2, reference_normalizer=True)
    default = prior_loss(sed.beta, sed.labels, sed.audio_mask, mask, num_blocks=2)
    ratio = np.asarray(positive_ratio(sed.labels, sed.audio_mask, num_blocks=2))
    beta = sed.beta.astype(np.float64)
    bce = ratio * np.logaddexp(0, -beta) + (1 - ratio) * np.logaddexp(0, beta)
    per_block = [
        np.sum((bce * mask)[b * 4 : (b + 1) * 4]) / mask[b * 4 : (b + 1) * 4].sum() for b in range(2)
    ]
    _assert_rel(ref, np.mean(per_block))
    assert abs(float(default) - float(ref)) > 1e-5  # unequal text counts: the two means differ


def test_total_combines_terms_and_reports_metrics():
    sed = _sed(seed=1)
    audio, text = _pairs(batch=8, seed=2)
    settings = LossSettings(w_clip=1.5, w_sed=200.0, w_prior=0.5)
    loss, metrics = flam_loss(sed, 2.0, audio, text, settings=settings, num_blocks=2)
    sed_term = framewise_loss_dense(sed, num_blocks=2)
    prior_term = prior_loss(sed.beta, sed.labels, sed.audio_mask, sed.text_mask, num_blocks=2)
    _assert_rel(loss, 1.5 * clip_loss(audio, text, 2.0) + 200 * sed_term + 0.5 * prior_term)
    _assert_rel(metrics["sed_loss"], sed_term)
    # Metrics over own-block valid pairs, from the unbiased score s = p / (p + σ(β)).
    pos, hits, n = 0.0, 0.0, 0
    for i in range(6):
        for j in range(8):
            if not (sed.audio_mask[i] and sed.text_mask[j]) or i // 3 != j // 4:
                continue
            p = 1 / (1 + np.exp(-(sed.alpha[j] * (sed.frames[i] @ sed.text_emb[j]) + sed.beta[j])))
            s = p / (p + 1 / (1 + np.exp(-sed.beta[j])))
            y = sed.labels[i, j % 4]
            pos, hits, n = pos + y.sum(), hits + np.sum((s > 0.5) == (y > 0.5)), n + len(y)
    _assert_rel(metrics["positive_ratio"], pos / n)
    _assert_rel(metrics["frame_accuracy"], hits / n)
    _assert_rel(metrics["alpha_mean"], sed.alpha[sed.text_mask].mean())
    _assert_rel(metrics["beta_mean"], sed.beta[sed.text_mask].mean())
    # No global batch: the clip term is absent.
    loss_sed_only, _ = flam_loss(sed, 2.0, settings=settings, num_blocks=2)
    _assert_rel(loss_sed_only, 200 * sed_term + 0.5 * prior_term)


def test_total_on_a_mesh_matches_dense_and_compiles_once():
    mesh = Mesh(np.array(jax.devices()[:4]).reshape(2, 2), ("data", "fsdp"))
    traces = []

    def on_mesh(sed, scale, audio, text):
        traces.append(1)  # runs only while tracing
        return flam_loss(sed, scale, audio, text, mesh=mesh, batch_axes=("data", "fsdp"))[0]

    step = jax.jit(jax.value_and_grad(on_mesh, argnums=(1, 2)))
    dense = jax.jit(jax.value_and_grad(lambda *a: flam_loss(*a, num_blocks=4)[0], argnums=(1, 2)))
    for seed in range(3):
        sed = _sed(num_blocks=4, seed=seed)
        audio, text = _pairs(batch=8, seed=seed)
        got = step(sed, jnp.float32(2.0), audio, text)
        want = dense(sed, jnp.float32(2.0), audio, text)
        _assert_rel(got[0], want[0])
        for g, w in zip(got[1], want[1], strict=True):
            _assert_rel(g, w)
    assert len(traces) == 1


def test_settings_come_from_config():
    config = base_config()
    settings = LossSettings.from_config(config.loss)
    assert (settings.w_clip, settings.w_sed, settings.w_prior) == (1.0, 200.0, 1.0)
    assert settings.framewise_scale == 1.0 and settings.framewise_bias == 0.0
    bad = ml_collections.ConfigDict(config.loss.to_dict())
    bad.global_loss = "hinge"
    with pytest.raises(ConfigError, match="global_loss"):
        LossSettings.from_config(bad)
