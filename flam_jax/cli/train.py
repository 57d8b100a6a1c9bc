"""``flam-train``: parse absl flags and the experiment config, then train.

Kept thin on purpose: everything testable lives in ``train.trainer.train_and_evaluate``.
The modules that use jax are imported at the top: importing jax does not start a backend,
so ``train.distributed.initialize`` still runs before anything touches one.

Exit status (``EXIT_CODES``): 0 when the run is done or was preempted (SIGTERM: saved, to
be restarted by its scheduler); 130 when Ctrl-C (SIGINT) stopped it, saved, or before the
loop began, unsaved (128 + 2, the shell's convention: ``flam-train ... && flam-export
...`` does not go on); 2 for a user error (``error: <line>``, e.g. a ``--workdir`` that
is a file or cannot be written, refused before anything is built).
"""

import os
import re
import sys

import jax
from absl import flags
from ml_collections import config_flags

from flam_jax import config as config_lib
from flam_jax import paths
from flam_jax.cli import hyphenate, report_errors
from flam_jax.errors import ConfigError
from flam_jax.train import compile_cache, distributed
from flam_jax.train.aot import run_compile_only
from flam_jax.train.trainer import train_and_evaluate
from flam_jax.train.workdir import check_workdir

_OVERRIDE = re.compile(r"^--?config\.([A-Za-z0-9_.]+)(=.*)?$")


def _define_flags(argv: list[str]) -> flags.FlagValues:
    # A fresh FlagValues per call: config_flags defines one flag per override, and a
    # second parse in the same process (tests) must not collide with the first.
    fv = flags.FlagValues()
    config_flags.DEFINE_config_file(
        "config", None, "experiment file, experiments/X.py[:variant]", flag_values=fv, sys_argv=argv
    )
    flags.DEFINE_string("workdir", None, "run directory (checkpoints, logs, config)", flag_values=fv)
    # Multi-process launches without a recognised cluster environment (see train.distributed).
    flags.DEFINE_string("coordinator", "", "host:port of process 0 for jax.distributed", flag_values=fv)
    flags.DEFINE_integer("num-processes", 0, "number of processes in the job", flag_values=fv)
    flags.DEFINE_integer("process-id", -1, "this process's index in the job", flag_values=fv)
    flags.DEFINE_integer(
        "heartbeat-timeout-s", 100, "seconds before a silent process stops the whole job", flag_values=fv
    )
    # Ahead-of-time check (train.aot): compile the step for a TPU topology, report, exit.
    flags.DEFINE_bool(
        "compile-only", False, "compile the train step for --topology and report", flag_values=fv
    )
    flags.DEFINE_string("topology", "", "TPU topology for --compile-only, e.g. v5e:16x16", flag_values=fv)
    return fv


def _config_spec(argv: list[str]) -> str:
    for i, arg in enumerate(argv):
        if arg.startswith(("--config=", "-config=")):
            return arg.split("=", 1)[1]
        if arg in ("--config", "-config") and i + 1 < len(argv):
            return argv[i + 1]
    raise ConfigError("missing required flag --config=experiments/X.py[:variant]")


def parse_flags(argv: list[str]) -> tuple[config_lib.ConfigDict, str]:
    """argv (program name first) -> (validated config, workdir). Raises ConfigError."""
    config, workdir, _ = parse_all_flags(argv)
    return config, workdir


def parse_all_flags(argv: list[str]) -> tuple[config_lib.ConfigDict, str, dict]:
    """Like ``parse_flags``, plus the multi-process flags as a dict."""
    spec = _config_spec(argv[1:])
    # Load once ourselves so that unknown override keys get a message naming the key,
    # rather than absl's bare KeyError.
    plain = config_lib.load_experiment(spec)
    for arg in argv[1:]:
        match = _OVERRIDE.match(arg)
        if match and not config_lib.has_path(plain, match.group(1)):
            raise ConfigError(f"unknown config key '{match.group(1)}' (from {arg})")
    fv = _define_flags(argv)
    try:
        fv(hyphenate(argv, set(fv)))
    except flags.Error as err:
        raise ConfigError(f"bad flag value: {err}") from err
    except (TypeError, ValueError, AttributeError, KeyError) as err:
        raise ConfigError(f"bad config override: {err}") from err
    if not fv.workdir:
        raise ConfigError("missing required flag --workdir=DIR")
    config = config_lib.validate(fv.config)
    launch = {
        "coordinator": fv.coordinator,
        "num_processes": fv["num-processes"].value,
        "process_id": fv["process-id"].value,
        "heartbeat_timeout_s": fv["heartbeat-timeout-s"].value,
    }
    if fv["compile-only"].value:
        launch = {"compile_only": True, "topology": fv.topology}
    return config, fv.workdir, launch


EXIT_CODES = {"done": 0, "preempted": 0, "interrupted": 130}
USAGE = "usage: flam-train --config=experiments/X.py[:variant] --workdir=DIR [--config.KEY=VALUE ...]"


@report_errors
def main(argv: list[str]) -> int:
    if any(arg in ("-h", "-help", "--help", "--helpshort") for arg in argv[1:]):
        print(f"{USAGE}\n\n{_define_flags(argv[:1]).get_help()}")
        return 0
    config, workdir, launch = parse_all_flags(argv)
    if launch.get("compile_only"):
        return _compile_only(config, workdir, launch["topology"])
    try:
        distributed.initialize(**launch)  # before anything touches a jax backend
        workdir = paths.resolve(workdir)
        check_workdir(workdir)
        if jax.process_index() == 0:
            path = config_lib.write_resolved(config, workdir)
            print(f"resolved config written to {path}")
        compile_cache.enable(config, workdir)
        result = train_and_evaluate(config, workdir)
    except KeyboardInterrupt:
        # Inside the loop Ctrl-C is a flag (a saved step, status "interrupted"); this is one
        # that came while starting up, when this run has nothing of its own to save.
        print("interrupted before the train loop could save: no new checkpoint written", file=sys.stderr)
        return EXIT_CODES["interrupted"]
    if jax.process_index() == 0:
        print(f"{result['status']} at step {result['step']}")
    return EXIT_CODES[result["status"]]


def _compile_only(config, workdir: str, topology: str) -> int:
    # Compile-only devices come from libtpu; the host's own backend stays CPU, so this
    # runs the same on a laptop, a GPU box or a TPU VM already busy with a job.
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    paths.require_writable(workdir, "--workdir")
    print(f"resolved config written to {config_lib.write_resolved(config, workdir)}")
    return run_compile_only(config, workdir, topology)


def run() -> None:
    sys.exit(main(sys.argv))


if __name__ == "__main__":
    run()
