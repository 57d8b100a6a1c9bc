"""Run gcp-storage-emulator, with the one response header its downloads lack.

GCS answers every media download with ``x-goog-generation`` (and ``-metageneration``);
the emulator (2026.7.19) does not, and tensorstore's GCS driver, which Orbax writes its
arrays through, refuses a read without it ("Malformed StorageGeneration"). This adds the
headers from the object's own metadata, then starts the emulator's command line as is.

    python tests/gcs_server.py start --host=127.0.0.1 --port=P --default-bucket=B --in-memory
"""

import sys

from gcp_storage_emulator.exceptions import NotFound
from gcp_storage_emulator.handlers import objects

_download = objects.download


def download(request, response, storage, *args, **kwargs):
    try:
        obj = storage.get_file_obj(request.params["bucket_name"], request.params["object_id"])
    except NotFound:
        obj = None  # the emulator's own handler answers 404
    if obj is not None:
        response["x-goog-generation"] = str(obj["generation"])
        response["x-goog-metageneration"] = str(obj.get("metageneration", 1))
    return _download(request, response, storage, *args, **kwargs)


objects.download = download  # before the server module builds its routing table

from gcp_storage_emulator.__main__ import main  # noqa: E402

if __name__ == "__main__":
    main(sys.argv[1:])
