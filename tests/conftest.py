"""Test setup: 8 fake CPU devices for sharding tests, fixed before jax is imported.

``FLAM_TEST_PLATFORM=cuda`` (or ``cpu``) instead keeps that platform's own devices: the
device check (``benchmarks/gpu_check.py``) runs its single-device selection of these tests
on one GPU that way, and its CPU smoke on one CPU device.
"""

import os

_PLATFORM = os.environ.get("FLAM_TEST_PLATFORM", "")
if _PLATFORM:
    os.environ["JAX_PLATFORMS"] = _PLATFORM
else:
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
    ).strip()
    os.environ["JAX_PLATFORMS"] = "cpu"
# Tests never reach the network (no model hub, no dataset downloads).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# gcsfs probes a bucket's type through an API the local GCS emulator lacks.
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
os.environ.setdefault("TFDS_DATA_DIR", os.path.join(os.path.dirname(__file__), ".tfds_unused"))
