"""Unit tests of the JAX front end and HTS-AT building blocks against torch/librosa."""

import warnings

import jax
import jax.numpy as jnp
import librosa
import numpy as np
import pytest
import torch
from flax import nnx

from flam_jax.audio import frontend as fe
from flam_jax.errors import ConfigError, InputError
from flam_jax.models import htsat
from flam_jax.models.configs import HTSAT_CONFIGS, HTSATConfig


def test_mel_matrix_equals_librosa_slaney():
    ours = fe.mel_matrix()
    ref = librosa.filters.mel(sr=48000, n_fft=1024, n_mels=64, fmin=50, fmax=14000).T
    assert ours.shape == (513, 64) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("frames", [1, 2, 5, 501, 1001, 1024])
def test_bicubic_matrix_matches_torch_interpolate(frames):
    x = np.random.RandomState(frames).randn(1, 1, frames, 64).astype(np.float32)
    ref = torch.nn.functional.interpolate(
        torch.from_numpy(x), (1024, 64), mode="bicubic", align_corners=True
    ).numpy()[0, 0]
    ours = np.asarray(fe.stretch_time(jnp.asarray(x[:, 0])))[0]
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-5)


def test_bicubic_matrix_rejects_more_than_1024_frames():
    with pytest.raises(InputError, match="1025 STFT frames"):
        fe.bicubic_stretch_matrix(1025)


def test_bicubic_is_not_jax_image_resize():
    # The whole point of the precomputed matrix: jax.image.resize uses other conventions.
    x = np.random.RandomState(0).randn(1001).astype(np.float32)
    ours = fe.bicubic_stretch_matrix(1001) @ x
    theirs = np.asarray(jax.image.resize(jnp.asarray(x), (1024,), "bicubic"))
    assert np.abs(ours - theirs).max() > 1e-2


def test_power_spectrogram_matches_torch_stft():
    wave = np.random.RandomState(1).uniform(-1, 1, (2, 48000)).astype(np.float32)
    spec = torch.stft(
        torch.from_numpy(wave).double(),
        n_fft=1024,
        hop_length=480,
        window=torch.hann_window(1024, periodic=True, dtype=torch.float64),
        center=True,
        pad_mode="reflect",
        return_complex=True,
    )
    ref = (spec.abs() ** 2).transpose(1, 2).numpy()
    ours = np.asarray(jax.jit(fe.power_spectrogram)(jnp.asarray(wave)))
    assert ours.shape == ref.shape == (2, 48000 // 480 + 1, 513)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=2e-6 * ref.max())


def test_dft_kernels_match_torchlibrosa_buffers():
    from torchlibrosa.stft import STFT

    stft = STFT(n_fft=1024, hop_length=480, win_length=1024, window="hann", center=True, pad_mode="reflect")
    real, imag = fe.dft_kernels()
    np.testing.assert_allclose(stft.conv_real.weight[:, 0].detach().numpy(), real, atol=1e-6)
    np.testing.assert_allclose(stft.conv_imag.weight[:, 0].detach().numpy(), imag, atol=1e-6)


def test_log_mel_floor_and_fold_layout():
    silence = jnp.zeros((1, 4800), jnp.float32)
    np.testing.assert_array_equal(np.asarray(fe.log_mel(silence)), -100.0)
    # Fold: image[row, col] = spec[time = (row // 64) * 256 + col, mel = row % 64].
    frames, bins = np.meshgrid(np.arange(1024), np.arange(64), indexing="ij")
    coded = jnp.asarray((frames * 100 + bins)[None].astype(np.float32))
    image = np.asarray(fe.fold_to_image(coded))[0, :, :, 0]
    rows, cols = np.meshgrid(np.arange(256), np.arange(256), indexing="ij")
    np.testing.assert_array_equal(image, ((rows // 64) * 256 + cols) * 100 + rows % 64)


def test_freq_mask_properties():
    masks = np.asarray(fe.freq_mask(jax.random.key(0), 512))
    assert masks.shape == (512, 64)
    for row in masks:
        runs = np.flatnonzero(np.diff(np.concatenate([[0], row.astype(int), [0]])))
        widths = runs[1::2] - runs[::2]
        # Two stripes of width 0..7 each: at most 2 runs, at most 14 bins.
        assert len(widths) <= 2 and row.sum() <= 14 and (widths <= 14).all()
    assert masks.sum(1).max() >= 8  # overlapping/adjacent wide stripes do occur
    assert (masks.sum(1) == 0).any()  # and so do zero-width draws
    # start ~ U{0..63-w} as in torchlibrosa: bins 0..62 get masked, the top bin never does.
    assert masks[:, :63].any(0).all() and not masks[:, 63].any()
    assert not np.array_equal(masks, np.asarray(fe.freq_mask(jax.random.key(1), 512)))


def test_frontend_spec_augment_only_in_training():
    model = fe.LogMelFrontend(rngs=nnx.Rngs(0))
    wave = jnp.asarray(np.random.RandomState(2).uniform(-1, 1, (4, 9600)).astype(np.float32))
    forward = nnx.jit(lambda m, w, train: m(w, train=train), static_argnums=2)
    eval_a, eval_b = forward(model, wave, False), forward(model, wave, False)
    np.testing.assert_array_equal(np.asarray(eval_a), np.asarray(eval_b))
    train = np.asarray(forward(model, wave, True))
    # bn0 in training normalises with batch statistics, then whole mel rows are zeroed.
    rows_zero = (train == 0).all(axis=2)[..., 0]  # (B, 256): image rows that are all 0
    assert rows_zero.any()
    per_bin = rows_zero.reshape(4, 4, 64)
    assert (per_bin == per_bin[:, :1]).all()  # a masked bin is masked in every time chunk


def test_mel_batchnorm_matches_torch_train_and_eval():
    rng = np.random.RandomState(3)
    batches = [rng.randn(3, 50, 64).astype(np.float32) * 7 + shift for shift in (2, -5, 0)]
    ref = torch.nn.BatchNorm2d(64)
    ours = fe.MelBatchNorm(64)

    def torch_bn(x):  # (B, T, bins) through BatchNorm2d over the bins, as openflam's bn0
        with torch.no_grad():
            return ref(torch.from_numpy(x).transpose(1, 2)[..., None])[..., 0].transpose(1, 2).numpy()

    for x in batches[:2]:
        np.testing.assert_allclose(np.asarray(ours(jnp.asarray(x), train=True)), torch_bn(x), atol=1e-5)
    np.testing.assert_allclose(np.asarray(ours.mean[...]), ref.running_mean.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(ours.var[...]), ref.running_var.numpy(), rtol=1e-5)
    ref.eval()
    np.testing.assert_allclose(
        np.asarray(ours(jnp.asarray(batches[2]), train=False)), torch_bn(batches[2]), atol=1e-5
    )


def test_mel_batchnorm_mask_ignores_padded_examples():
    x = np.random.RandomState(4).randn(4, 20, 64).astype(np.float32)
    masked = fe.MelBatchNorm(64)
    out = np.asarray(masked(jnp.asarray(x), train=True, mask=jnp.array([True, True, False, False])))
    alone = fe.MelBatchNorm(64)
    ref = np.asarray(alone(jnp.asarray(x[:2]), train=True))
    np.testing.assert_allclose(out[:2], ref, atol=1e-5)
    np.testing.assert_allclose(np.asarray(masked.var[...]), np.asarray(alone.var[...]), rtol=1e-5)


@pytest.mark.parametrize(
    ("wave", "message"),
    [
        (np.zeros(48000, np.float32), "rank 1"),
        (np.zeros((1, 48000), np.int16), "dtype int16"),
        (np.zeros((1, 480001), np.float32), "longer than 10 s"),
        (np.zeros((1, 100), np.float32), "shorter than"),
        (np.full((2, 48000), np.nan, np.float32), "NaN"),
        (np.array([[0.0] * 47999 + [np.inf]], np.float32), "infinite"),
        ([[0.0] * 48000], "must be an array"),
    ],
)
def test_bad_waveforms_raise_one_line_input_error(wave, message):
    with pytest.raises(InputError, match=message) as info:
        fe.validate_waveform(wave)
    assert "\n" not in str(info.value)


def test_relative_position_index_and_shift_mask_match_reference_buffers():
    from openflam.module.htsat import SwinTransformerBlock

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for grid, shift in [(64, 4), (16, 4), (8, 0)]:
            block = SwinTransformerBlock(
                dim=32, input_resolution=(grid, grid), num_heads=2, window_size=8, shift_size=shift
            )
            window, our_shift = htsat.window_geometry(grid, 8, 1 if shift else 0)
            assert (window, our_shift) == (block.window_size, block.shift_size)
            np.testing.assert_array_equal(
                htsat.relative_position_index(window), block.attn.relative_position_index.numpy()
            )
            if shift:
                np.testing.assert_array_equal(htsat.shift_mask(grid, window, shift), block.attn_mask.numpy())
            else:
                assert block.attn_mask is None


def test_configs_geometry():
    for name, cfg in HTSAT_CONFIGS.items():
        assert cfg.num_frames == (128 if name == "base-12hz" else 32), name
    assert HTSAT_CONFIGS["base"].out_dim == 1024 and HTSAT_CONFIGS["tiny"].out_dim == 768
    with pytest.raises(ConfigError):
        HTSATConfig(embed_dim=30, depths=(1, 1), num_heads=(4, 4))


# Two stages (one plain, one shifted-window block, one PatchMerging): the whole HTS-AT
# code path at a fraction of the compile time of a real size.
MINI = HTSATConfig(embed_dim=16, depths=(1, 2), num_heads=(1, 2))


@pytest.fixture(scope="module")
def short_waves():
    return jnp.asarray(np.random.RandomState(5).uniform(-1, 1, (2, 24000)).astype(np.float32))


def test_htsat_train_is_random_and_eval_deterministic(short_waves):
    model = htsat.HTSAT(MINI, rngs=nnx.Rngs(0))
    forward = nnx.jit(lambda m, w, train: m(w, train=train), static_argnums=2)
    eval_a, eval_b = forward(model, short_waves, False), forward(model, short_waves, False)
    assert eval_a.shape == (2, MINI.num_frames, MINI.out_dim) and eval_a.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(eval_a), np.asarray(eval_b))
    train_a, train_b = forward(model, short_waves, True), forward(model, short_waves, True)
    assert not np.allclose(np.asarray(train_a), np.asarray(train_b))
    # Training updated bn0's running statistics away from their initial 0 / 1.
    assert np.abs(np.asarray(model.frontend.bn0.mean[...])).min() > 0


def test_bf16_compute_keeps_fp32_params_and_output(short_waves):
    plain = htsat.HTSAT(MINI, rngs=nnx.Rngs(0))
    bf16 = htsat.HTSAT(MINI, rngs=nnx.Rngs(0), compute_dtype="bfloat16")
    assert {p.dtype for p in jax.tree.leaves(nnx.state(bf16, nnx.Param))} == {jnp.dtype("float32")}
    out_p = np.asarray(nnx.jit(lambda m: m(short_waves))(plain))
    out_b = nnx.jit(lambda m: m(short_waves))(bf16)
    assert out_b.dtype == jnp.float32
    assert np.abs(np.asarray(out_b) - out_p).max() < 0.05 * np.abs(out_p).max()


def test_drop_path_is_per_sample_and_training_only():
    rngs = nnx.Rngs(0)
    block = htsat.SwinBlock(MINI, 32, 1, 8, index=0, drop_path=1.0, dtype=jnp.float32, rngs=rngs)
    x = jax.random.normal(jax.random.key(0), (6, 64, 32))
    np.testing.assert_array_equal(np.asarray(block(x, train=True)), np.asarray(x))
    assert not np.allclose(np.asarray(block(x, train=False)), np.asarray(x))
    half = htsat.SwinBlock(MINI, 32, 1, 8, index=0, drop_path=0.5, dtype=jnp.float32, rngs=rngs)
    out = np.asarray(half(jnp.tile(x[:1], (16, 1, 1)), train=True))
    untouched = np.array([np.array_equal(o, np.asarray(x[0])) for o in out])
    assert untouched.any() and not untouched.all()


def test_remat_stage_matches_plain_values_and_gradients():
    # Stage 1 of MINI: a plain and a shifted block on a 32x32 grid, then PatchMerging.
    x = jax.random.normal(jax.random.key(1), (1, 32 * 32, 32))
    grads = []
    for remat in ("none", "block"):
        stage = htsat.SwinStage(MINI, 1, [0.0, 0.0], dtype=jnp.float32, remat=remat, rngs=nnx.Rngs(0))
        grads.append(nnx.jit(nnx.value_and_grad(lambda s: (s(x, False) ** 2).mean()))(stage))
    (loss_p, grad_p), (loss_r, grad_r) = grads
    np.testing.assert_allclose(float(loss_r), float(loss_p), rtol=1e-6)
    for a, b in zip(jax.tree.leaves(grad_r), jax.tree.leaves(grad_p), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-8)
    with pytest.raises(ConfigError, match="remat"):
        htsat.HTSAT(MINI, rngs=nnx.Rngs(0), remat="everything")


@pytest.mark.parametrize("size", sorted(HTSAT_CONFIGS))
def test_every_config_traces_to_its_frame_shape(size):
    cfg = HTSAT_CONFIGS[size]

    def forward(wave):
        return htsat.HTSAT(cfg, rngs=nnx.Rngs(0))(wave, train=True)

    out = jax.eval_shape(forward, jax.ShapeDtypeStruct((2, 480000), jnp.float32))
    assert out.shape == (2, cfg.num_frames, cfg.out_dim) and out.dtype == jnp.float32
