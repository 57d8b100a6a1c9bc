"""A real GCS-compatible server on 127.0.0.1 for the cloud-path tests.

``gcp-storage-emulator`` (PyPI) serves the JSON and XML APIs in memory with one bucket,
started through ``gcs_server.py`` (which adds the generation headers its downloads lack).
gcsfs (behind etils epath: config.json, metrics, exports, indexes, Grain's iterator files,
Orbax's metadata) finds it through ``STORAGE_EMULATOR_HOST``; tensorstore (Orbax's array
store) through ``TENSORSTORE_GCS_HTTP_URL`` with a dummy token. gcsfs's newest releases
also probe the bucket type through the storage-control API, which the emulator lacks:
``GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false`` skips that probe.
"""

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request

BUCKET = "bucket"


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def emulator():
    """Start the server, point this process's environment at it; yields that environment."""
    port = _port()
    url = f"http://127.0.0.1:{port}"
    server = os.path.join(os.path.dirname(__file__), "gcs_server.py")
    args = ["start", "--host=127.0.0.1", f"--port={port}", f"--default-bucket={BUCKET}", "--in-memory"]
    proc = subprocess.Popen(
        [sys.executable, server, *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(f"{url}/storage/v1/b/{BUCKET}", timeout=2).read()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("the GCS emulator did not start") from None
            time.sleep(0.2)
    env = {
        "STORAGE_EMULATOR_HOST": url,
        "TENSORSTORE_GCS_HTTP_URL": url,
        "GOOGLE_AUTH_TOKEN_FOR_TESTING": "test-token",
        "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield env
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        proc.terminate()
        proc.wait(timeout=10)
