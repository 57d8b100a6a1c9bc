"""The foundation: fake devices, config parsing and validation, one-line CLI errors."""

import json
import os
import subprocess
import sys

import jax
import pytest

from flam_jax import config as config_lib
from flam_jax.cli import report_errors
from flam_jax.cli import train as train_main
from flam_jax.errors import ConfigError, FlamError, InputError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = os.path.join(REPO, "experiments", "cpu_demo.py")


def test_eight_fake_cpu_devices():
    assert jax.device_count() == 8
    assert {d.platform for d in jax.devices()} == {"cpu"}


def test_every_experiment_validates():
    experiments = os.path.join(REPO, "experiments")
    files = [f for f in os.listdir(experiments) if f.endswith(".py") and not f.startswith("_")]
    assert files
    for name in files:
        config_lib.validate(config_lib.load_experiment(os.path.join(experiments, name)))


def test_parse_flags_applies_overrides_and_variant(tmp_path):
    config, workdir = train_main.parse_flags(
        [
            "flam-train",
            f"--config={DEMO}:tiny",
            f"--workdir={tmp_path}",
            "--config.optim.lr=0.5",
            "--config.data.sed_clips=4",
            "--config.model.per_text_bias=false",
        ]
    )
    assert workdir == str(tmp_path)
    assert config.optim.lr == 0.5 and config.data.sed_clips == 4
    assert config.model.per_text_bias is False
    assert config.train.steps == 3  # from the "tiny" variant


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--config.nonexistent=1"], "unknown config key 'nonexistent'"),
        (["--config.optim.nope=1"], "unknown config key 'optim.nope'"),
        (["--config.data.sed_clips=abc"], "bad flag value: flag --config.data.sed_clips=abc"),
        (["--config.data.sed_clips=0"], "data.sed_clips must be positive"),
        (["--config.optim.decay=step"], "optim.decay must be"),
    ],
)
def test_parse_flags_rejects_bad_overrides(tmp_path, extra, message):
    with pytest.raises(ConfigError, match=message):
        train_main.parse_flags(["flam-train", f"--config={DEMO}", f"--workdir={tmp_path}", *extra])


def test_missing_config_file_and_variant(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        train_main.parse_flags(["flam-train", "--config=nope.py", f"--workdir={tmp_path}"])
    with pytest.raises(ConfigError, match="unknown variant"):
        train_main.parse_flags(["flam-train", f"--config={DEMO}:huge", f"--workdir={tmp_path}"])
    with pytest.raises(ConfigError, match="--workdir"):
        train_main.parse_flags(["flam-train", f"--config={DEMO}"])


def test_validate_rejects_unknown_keys_and_types_in_files():
    config = config_lib.base_config()
    config.model.typo_key = 3
    with pytest.raises(ConfigError, match="unknown config key 'model.typo_key'"):
        config_lib.validate(config)
    config = config_lib.base_config()
    config.train.steps = 10
    config.model.embed_dim = 512
    config_lib.validate(config)
    config = config_lib.base_config()
    del config["optim"]["lr"]
    config.optim.lr = "fast"
    with pytest.raises(ConfigError, match="optim.lr' must be float"):
        config_lib.validate(config)


def test_resolved_config_written_as_json(tmp_path):
    config, _ = train_main.parse_flags(
        ["flam-train", f"--config={DEMO}", f"--workdir={tmp_path}", "--config.train.steps=7"]
    )
    path = config_lib.write_resolved(config, str(tmp_path))
    with open(path) as f:
        data = json.load(f)
    assert data["train"]["steps"] == 7
    assert data["model"]["text_tower"] == "minilm-l6"


def test_error_helper_one_line_exit_2(capsys):
    @report_errors
    def failing():
        raise InputError("bad\nthing   here")

    assert failing() == 2
    err = capsys.readouterr().err
    assert err == "error: bad thing here\n"

    @report_errors
    def fine():
        return None

    assert fine() == 0

    @report_errors
    def bug():
        raise RuntimeError("a bug keeps its traceback")

    with pytest.raises(RuntimeError):
        bug()
    assert issubclass(ConfigError, FlamError)


def test_flam_train_cli_unknown_key_one_line(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "flam_jax.cli.train",
            f"--config={DEMO}",
            f"--workdir={tmp_path / 'x'}",
            "--config.nonexistent=1",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines == ["error: unknown config key 'nonexistent' (from --config.nonexistent=1)"]


def test_apply_assignments_parses_each_value_as_its_keys_type():
    config = config_lib.base_config()
    assignments = ["mesh.fsdp=8", "model.remat=block", "model.per_text_bias=False", "optim.lr=3e-4"]
    config_lib.apply_assignments(config, assignments)
    assert config.mesh.fsdp == 8 and config.model.remat == "block"
    assert config.model.per_text_bias is False and config.optim.lr == 3e-4


# Runs each module given as ``python -m MODULE --help`` would (runpy, run as __main__), in
# one process: one jax import for all, not one each.
RUN_AS_MAIN = """
import runpy, sys
for module in sys.argv[1:]:
    sys.argv = [module, "--help"]
    print("==", module, flush=True)
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as done:
        print("== exit", done.code, flush=True)
    else:
        print("== no exit", flush=True)
"""


def test_every_console_script_also_runs_as_python_m():
    import subprocess
    import sys
    import tomllib

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, "pyproject.toml"), "rb") as f:
        scripts = tomllib.load(f)["project"]["scripts"]
    modules = [target.split(":")[0] for target in scripts.values()]
    # flam-train's absl flags are defined at import, so a second run in one process would
    # define them twice: it gets a process of its own.
    groups = [[m for m in modules if m != "flam_jax.cli.train"], ["flam_jax.cli.train"]]
    assert "flam_jax.cli.train" in modules
    for group in groups:
        out = subprocess.run(
            [sys.executable, "-c", RUN_AS_MAIN, *group], capture_output=True, text=True, timeout=120, cwd=root
        )
        assert out.returncode == 0, out.stderr[-2000:]
        parts = out.stdout.split("\n== ")  # "module\nusage: …", then "exit 0", per module
        for module in group:
            at = [i for i, part in enumerate(parts) if part.lstrip("= ").startswith(module + "\n")]
            assert at and at[0] + 1 < len(parts), (module, out.stdout[-2000:], out.stderr[-1000:])
            ran = parts[at[0] + 1].startswith("exit 0")
            assert ran and "usage" in parts[at[0]].lower(), (module, out.stdout[-2000:])


def test_one_flag_spelling_hyphens_with_underscores_read_as_the_same_flag(tmp_path):
    from flam_jax.cli import ArgumentParser, hyphenate

    args = [f"--config={DEMO}", f"--workdir={tmp_path}", "--coordinator=h:1"]
    for spelling in (["--num-processes=2", "--process-id=1"], ["--num_processes=2", "--process_id=1"]):
        _, _, launch = train_main.parse_all_flags(["flam-train", *args, *spelling])
        assert (launch["num_processes"], launch["process_id"]) == (2, 1), spelling
    _, _, launch = train_main.parse_all_flags(["flam-train", *args, "--compile_only", "--topology=v5e:2x2"])
    assert launch == {"compile_only": True, "topology": "v5e:2x2"}
    parser = ArgumentParser(prog="x")
    parser.add_argument("--data-dir")
    parser.add_argument("pos", nargs="*")
    assert parser.parse_args(["--data_dir", "D"]).data_dir == "D"
    assert parser.parse_args(["--data-dir=E", "--", "--data_dir"]).pos == ["--data_dir"]
    # Config keys keep their underscores; unknown flags are left for the parser to refuse.
    assert hyphenate(["--config.data.sed_clips=4", "--no_such=1"], {"data-dir"}) == [
        "--config.data.sed_clips=4",
        "--no_such=1",
    ]
