"""Multi-host start-up: ``jax.distributed.initialize()`` when the launcher asks for it.

Three launchers are recognised, checked in this order:
- explicit flags (``--coordinator``, ``--num-processes``, ``--process-id``) or the
  equivalent ``JAX_COORDINATOR_ADDRESS`` / ``JAX_NUM_PROCESSES`` / ``JAX_PROCESS_ID``;
- a multi-task SLURM job (``SLURM_NTASKS`` > 1);
- a multi-host Cloud TPU slice (``TPU_WORKER_HOSTNAMES`` lists more than one host, or
  ``MEGASCALE_COORDINATOR_ADDRESS`` is set).
For the last two jax discovers the coordinator itself. Must run before anything
touches a jax backend.
"""

import os

import jax

from flam_jax.errors import ConfigError


def _env_int(name: str) -> int | None:
    value = os.environ.get(name, "")
    if not value:
        return None
    try:
        return int(value)
    except ValueError as err:
        raise ConfigError(f"environment variable {name}={value!r} is not an integer") from err


def launcher_wants_distributed(env=os.environ) -> bool:
    if _env_int("SLURM_NTASKS") and int(env["SLURM_NTASKS"]) > 1 and "SLURM_JOB_ID" in env:
        return True
    hosts = [h for h in env.get("TPU_WORKER_HOSTNAMES", "").split(",") if h.strip()]
    return len(hosts) > 1 or bool(env.get("MEGASCALE_COORDINATOR_ADDRESS"))


def initialize(
    coordinator: str = "", num_processes: int = 0, process_id: int = -1, heartbeat_timeout_s: int = 100
) -> bool:
    """Join the job's processes if this is a multi-process launch; returns whether it did.

    ``heartbeat_timeout_s``: after this long without a heartbeat from a process (killed, or
    its host gone) the coordination service stops every other process with an error, so a
    job never hangs on a dead peer; jax's default is 100 s.
    """
    coordinator = coordinator or os.environ.get("JAX_COORDINATOR_ADDRESS", "")
    num_processes = num_processes or (_env_int("JAX_NUM_PROCESSES") or 0)
    if process_id < 0:
        process_id = _env_int("JAX_PROCESS_ID")
        process_id = -1 if process_id is None else process_id
    explicit = bool(coordinator) or num_processes > 0 or process_id >= 0
    if explicit:
        if not (coordinator and num_processes > 0 and process_id >= 0):
            raise ConfigError("--coordinator, --num_processes and --process_id must be given together")
        if not 0 <= process_id < num_processes:
            raise ConfigError(f"--process_id={process_id} is not in [0, {num_processes})")
        if num_processes == 1:
            return False
        _use_cpu_collectives()
        jax.distributed.initialize(
            coordinator,
            num_processes=num_processes,
            process_id=process_id,
            heartbeat_timeout_seconds=heartbeat_timeout_s,
        )
        return True
    if launcher_wants_distributed():
        jax.distributed.initialize(heartbeat_timeout_seconds=heartbeat_timeout_s)
        return True
    return False


def _use_cpu_collectives() -> None:
    # CPU processes need a collectives backend for cross-process all-reduce (tests,
    # laptops); accelerators bring their own (NCCL, ICI) and ignore this setting.
    platforms = os.environ.get("JAX_PLATFORMS", "") or str(jax.config.jax_platforms or "")
    if platforms.startswith("cpu"):
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
