"""One path layer for every file the project reads or writes: local paths and ``gs://``.

Built on etils ``epath`` (gcsfs behind it for ``gs://``, pinned in requirements.txt);
local paths behave exactly as with ``os`` and ``open``. Object stores differ from a file
system in three ways that matter here, and each has one answer:

- no atomic rename: ``write_bytes``/``write_text`` write a temporary file and rename it
  locally, and upload one object remotely (an object appears whole or not at all);
- no append: ``AppendLog`` appends locally and, remotely, keeps the text in memory and
  uploads the whole object on every ``flush`` (metric logs stay small);
- libraries that open local files only (HF tokenizers, sentencepiece): ``local_copy``
  downloads a remote file or folder once per process into a temporary folder.

TFDS's ArrayRecord files are the exception: their C++ reader and writer open local paths
only, so a dataset directory must be local or a mounted bucket (``require_local``).
"""

import atexit
import io
import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import BinaryIO

import fsspec
from etils import epath

from flam_jax.errors import ConfigError

PathLike = str | os.PathLike

# gcsfs caches folder listings per process and answers "not found" from a stale one, so a
# file that another process (another host, the token check, a later stage) wrote would
# stay invisible: ask the bucket every time instead.
fsspec.config.conf.setdefault("gs", {}).setdefault("use_listings_cache", False)


def is_remote(p: PathLike) -> bool:
    return "://" in os.fspath(p)


def path(p: PathLike) -> epath.Path:
    text = os.fspath(p)
    return epath.Path(text if is_remote(text) else os.path.expanduser(text))


def resolve(p: PathLike) -> str:
    """An absolute local path, or the URL as given (without a trailing slash)."""
    text = os.fspath(p)
    return text.rstrip("/") if is_remote(text) else os.path.abspath(os.path.expanduser(text))


def join(base: PathLike, *parts: str) -> str:
    return os.fspath(path(base).joinpath(*parts)) if is_remote(base) else os.path.join(resolve(base), *parts)


def exists(p: PathLike) -> bool:
    return path(p).exists()


def isdir(p: PathLike) -> bool:
    return path(p).is_dir()


def isfile(p: PathLike) -> bool:
    return path(p).is_file()


def makedirs(p: PathLike) -> None:
    path(p).mkdir(parents=True, exist_ok=True)


def listdir(p: PathLike) -> list[str]:
    return sorted(child.name for child in path(p).iterdir())


def read_bytes(p: PathLike) -> bytes:
    return path(p).read_bytes()


def read_text(p: PathLike) -> str:
    return path(p).read_text(encoding="utf-8")


def read_chunks(p: PathLike, size: int = 1 << 20) -> Iterator[bytes]:
    """A file's bytes in pieces of ``size``, so a large one (a params file to hash) is never
    held whole."""
    with path(p).open("rb") as f:
        while chunk := f.read(size):
            yield chunk


def open_stream(p: PathLike) -> BinaryIO:
    """A file read once from start to end (a tar shard): the path layer's streaming object."""
    return path(p).open("rb")


# An object up to this size is fetched in one request by ``open_remote``.
WHOLE_OBJECT_BYTES = 64 << 20


def open_remote(p: PathLike) -> BinaryIO:
    """A remote file for a reader that seeks and reads in small pieces (libsndfile): an
    object of at most ``WHOLE_OBJECT_BYTES`` is fetched whole into memory, since each small
    read of the store's file object is a round trip (a 3 s WAV took 51 of them); a larger
    one is the path layer's streaming file object, so memory stays bounded."""
    if stat(p)[0] <= WHOLE_OBJECT_BYTES:
        return io.BytesIO(read_bytes(p))
    return path(p).open("rb")


def stat(p: PathLike) -> tuple[int, int]:
    """(size in bytes, modification time in ns) of a file. Local times are exact; an object's
    is its last upload, to the second (what the store keeps)."""
    if is_remote(p):
        info = path(p).stat()
        return int(info.length), int(info.mtime) * 1_000_000_000
    info = os.stat(resolve(p))
    return info.st_size, info.st_mtime_ns


def write_bytes(p: PathLike, data: bytes) -> None:
    """Write ``p`` whole: readers never see a half-written file."""
    if is_remote(p):
        path(p).write_bytes(data)
        return
    target = resolve(p)
    tmp = f"{target}.tmp.{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, target)


def write_text(p: PathLike, text: str) -> None:
    write_bytes(p, text.encode("utf-8"))


def remove(p: PathLike) -> None:
    path(p).unlink(missing_ok=True)


def rmtree(p: PathLike) -> None:
    if exists(p):
        path(p).rmtree()


def walk_files(p: PathLike) -> list[str]:
    """Every file below ``p``, as paths relative to it (sorted)."""
    root = path(p)
    # epath's remote walk names folders without their scheme ("bucket/run", not "gs://...").
    base = os.fspath(root).split("://", 1)[-1]
    out = []
    for directory, _, files in root.walk():
        folder = os.path.relpath(os.fspath(directory).split("://", 1)[-1], base)
        out += [os.path.normpath(os.path.join(folder, name)) for name in files]
    return sorted(out)


def upload_tree(local_dir: str, dest: PathLike) -> None:
    """Copy a local folder's files to ``dest`` (local or remote), keeping relative paths."""
    for rel in walk_files(local_dir):
        target = join(dest, rel)
        makedirs(os.path.dirname(target) if not is_remote(target) else path(target).parent)
        write_bytes(target, read_bytes(os.path.join(local_dir, rel)))


_COPIES: dict[str, str] = {}


def local_copy(p: PathLike, names: list[str] | None = None) -> str:
    """``p`` itself when local; else a local copy of the file or folder (made once per process;
    ``names``: only these files of the folder)."""
    if not is_remote(p):
        return resolve(p)
    key = resolve(p) + ("" if names is None else "?" + ",".join(sorted(names)))
    if key not in _COPIES:
        folder = tempfile.mkdtemp(prefix="flam_remote_")
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        source = path(resolve(p))
        if source.is_dir():
            for rel in walk_files(source) if names is None else names:
                target = os.path.join(folder, rel)
                os.makedirs(os.path.dirname(target), exist_ok=True)
                with open(target, "wb") as f:
                    f.write((source / rel).read_bytes())
            _COPIES[key] = folder
        else:
            target = os.path.join(folder, source.name)
            with open(target, "wb") as f:
                f.write(source.read_bytes())
            _COPIES[key] = target
    return _COPIES[key]


def require_local(p: PathLike, what: str) -> str:
    """``p`` resolved; a remote URL is a one-line ConfigError saying how to mount it."""
    if is_remote(p):
        raise ConfigError(
            f"{what} {os.fspath(p)} is remote, but ArrayRecord (the dataset files) reads and writes "
            "local paths only: mount the bucket (e.g. gcsfuse --implicit-dirs BUCKET /mnt/BUCKET) "
            "and give the mounted path"
        )
    return resolve(p)


def require_writable(p: PathLike, what: str, *, beside: bool = False) -> None:
    """Refuse, before any work, an output folder that cannot be written: one that is a file,
    lies under a file, or whose nearest existing folder takes no new entry; a one-line
    ConfigError naming ``what`` (the flag). ``beside``: the writer also makes siblings of
    ``p`` (a folder written aside and renamed into place), so its parent must take them.

    Locally the check is a probe (a temporary folder made and removed there): permission
    bits do not tell for root, ACLs or read-only mounts. Remotely only an object in the
    folder's place is refused; a bucket's permissions show at the first write.
    """
    if is_remote(p):
        if isfile(p):
            raise ConfigError(f"{what} {os.fspath(p)} is a file, not a folder")
        return
    target = os.path.realpath(resolve(p))  # a symlinked folder is written where it points
    if os.path.exists(target) and not os.path.isdir(target):
        raise ConfigError(f"{what} {os.fspath(p)} is a file, not a folder")
    folder = os.path.dirname(target) if beside else target
    while not os.path.exists(folder):  # missing folders are made inside the first that exists
        folder = os.path.dirname(folder)
    if not os.path.isdir(folder):
        raise ConfigError(f"{what} {os.fspath(p)}: {folder} is a file, not a folder")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".flam-probe-", dir=folder))
    except OSError as err:
        raise ConfigError(f"{what} {os.fspath(p)}: cannot write in {folder} ({err.strerror})") from err


class AppendLog:
    """A file that grows by appends (``metrics.jsonl``, TensorBoard events).

    Local: an open file in append mode. Remote: the existing object is read once, then the
    whole content is uploaded on every ``flush`` (objects cannot be appended to).
    """

    def __init__(self, p: PathLike, *, binary: bool = False):
        self.path = resolve(p)
        self._remote = is_remote(p)
        self._binary = binary
        if self._remote:
            self._content = bytearray(read_bytes(self.path) if exists(self.path) else b"")
            self._dirty = False
        else:
            self._file = open(self.path, "ab" if binary else "a", encoding=None if binary else "utf-8")

    def end_line(self) -> None:
        """Terminate a last line cut short (a process killed mid-write), so that the next
        entry starts on its own line."""
        if self._remote:
            if self._content and not self._content.endswith(b"\n"):
                self.write(b"\n")
            return
        self._file.flush()
        if os.path.getsize(self.path) == 0:
            return
        with open(self.path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            torn = f.read(1) != b"\n"
        if torn:
            self.write(b"\n" if self._binary else "\n")

    def write(self, data: str | bytes) -> None:
        if not self._remote:
            self._file.write(data)
            return
        self._content += data if isinstance(data, bytes) else data.encode("utf-8")
        self._dirty = True

    def flush(self) -> None:
        if not self._remote:
            self._file.flush()
        elif self._dirty:
            path(self.path).write_bytes(bytes(self._content))
            self._dirty = False

    def close(self) -> None:
        self.flush()
        if not self._remote:
            self._file.close()
