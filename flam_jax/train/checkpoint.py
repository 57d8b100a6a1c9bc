"""Orbax checkpoints holding the train state and the data iterator as one step.

Layout: ``WORKDIR/checkpoints/<step>/state`` (the TrainState pytree, tensorstore) and
``WORKDIR/checkpoints/<step>/data/process_<i>-of-<n>.json`` (each host's Grain
iterator state); the workdir may be local or ``gs://`` (Orbax and tensorstore write both).
Orbax writes a step into a temporary directory and renames it when every item is complete
(on GCS, which cannot rename, it writes a commit marker last), so a process killed
mid-save leaves only an incomplete step, which is ignored (and removed) on the next start:
the previous step stays the latest.

Restoring onto another number of processes: the train state goes onto the new mesh as
always; the data iterators, whose files are per process, are placed from the step and the
old processes' states (``restore_at_step``) instead of being read back one to one.

Retention: the ``train.ckpt_keep`` newest steps plus every ``train.ckpt_keep_every``-th
(Orbax ``max_to_keep`` / ``keep_period``); the trainer always saves the final step and a
preemption or interruption step.

A complete step that cannot be read (a damaged file) is a one-line CheckpointError naming
the previous complete step and the flag that resumes from it (``train.resume_step``);
nothing is deleted. Resuming from an earlier step moves the later ones, which Orbax would
refuse to save over, to ``checkpoints/superseded/<step>-<time>`` (``supersede``): Orbax
only counts folders named by a number, so it neither lists nor prunes them there.
"""

import re
import time
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from flam_jax import paths
from flam_jax.errors import CheckpointError
from flam_jax.train.sharding import path_name

STATE, DATA = "state", "data"
SUPERSEDED = "superseded"
# Tensorstore appends its whole JSON spec to an error, hundreds of characters of no use to a reader.
_SPEC_TAIL = re.compile(r"\s*\[[a-z_]+=.*$", re.S)
_QUOTED = re.compile(r'"([^"]+)"')


def _describe(tree) -> dict[str, tuple]:
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {path_name(path): tuple(getattr(leaf, "shape", ())) for path, leaf in leaves}


class Checkpointer:
    """Async save / restore of (TrainState, data iterator) under ``directory``."""

    def __init__(self, directory: str, *, keep: int, keep_every: int = 0, async_save: bool = True):
        self.directory = paths.resolve(directory)
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep if keep > 0 else None,
            keep_period=keep_every if keep_every > 0 else None,
            enable_async_checkpointing=async_save,
            create=True,
            cleanup_tmp_directories=True,
        )
        try:
            # Handlers named up front so that a fresh manager can read metadata of old steps.
            handlers = {STATE: ocp.StandardCheckpointHandler(), DATA: grain.checkpoint.CheckpointHandler()}
            self.manager = ocp.CheckpointManager(self.directory, options=options, item_handlers=handlers)
        except (OSError, ValueError) as err:
            raise CheckpointError(f"cannot open checkpoint directory {self.directory}: {err}") from err

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def steps(self) -> list[int]:
        """Every complete step, oldest first (temporary directories of unfinished saves excluded)."""
        return sorted(self.manager.all_steps())

    def step_dir(self, step: int) -> str:
        return paths.join(self.directory, str(step))

    def save(self, step: int, state, data_iterator: Any = None, *, force: bool = False) -> bool:
        """Start saving; returns at once when async (the arrays are already copied to host)."""
        items = {STATE: ocp.args.StandardSave(state)}
        if data_iterator is not None:
            items[DATA] = grain.checkpoint.CheckpointSave(data_iterator)
        return self.manager.save(step, args=ocp.args.Composite(**items), force=force)

    def restore(self, step: int, abstract_state, data_iterator: Any = None):
        """Restore ``step`` onto the shardings of ``abstract_state`` (any device count).

        Also moves ``data_iterator`` to the saved position. A missing, corrupt or
        mismatched checkpoint raises a one-line CheckpointError naming it.
        """
        where = self.step_dir(step)
        self._check_compatible(step, abstract_state)
        items = {STATE: ocp.args.StandardRestore(abstract_state)}
        other_layout = None
        if data_iterator is not None:
            data_dir = paths.join(where, DATA)
            if not paths.isdir(data_dir):
                raise self._unreadable(step, "no data iterator state")
            own = f"process_{jax.process_index()}-of-{jax.process_count()}.json"
            if paths.exists(paths.join(data_dir, own)):
                items[DATA] = grain.checkpoint.CheckpointRestore(data_iterator)
            else:
                other_layout = self._saved_data_states(step, data_dir, data_iterator)
        try:
            restored = self.manager.restore(step, args=ocp.args.Composite(**items))
        except CheckpointError:
            raise
        except Exception as err:  # Orbax/tensorstore raise many types for a damaged file
            raise self._unreadable(step, _short_reason(err, where)) from err
        if other_layout is not None:
            data_iterator.restore_at_step(step, other_layout)
        return restored[STATE]

    def _saved_data_states(self, step: int, data_dir: str, data_iterator) -> list[bytes]:
        """Every old process's iterator state, for a restore onto another process count."""
        names = [n for n in paths.listdir(data_dir) if n.startswith("process_") and n.endswith(".json")]
        counts = {n.rsplit("-of-", 1)[-1].removesuffix(".json") for n in names}
        if len(counts) != 1 or len(names) != int(next(iter(counts), "0")):
            raise self._unreadable(step, "an incomplete set of data iterator states")
        if not hasattr(data_iterator, "restore_at_step"):
            raise CheckpointError(
                f"checkpoint {data_dir} was written by {len(names)} processes and this data iterator "
                f"cannot resume on {jax.process_count()}"
            )
        if jax.process_index() == 0:
            print(
                f"resuming on {jax.process_count()} processes from a checkpoint of {len(names)}: "
                "data positions follow from the step; the sample order differs from the old layout's",
                flush=True,
            )
        order = sorted(names, key=lambda n: int(n.split("_")[1].split("-")[0]))
        return [paths.read_bytes(paths.join(data_dir, n)) for n in order]

    def _check_compatible(self, step: int, abstract_state) -> None:
        where = self.step_dir(step)
        try:
            meta = self.manager.item_metadata(step)
            stored = meta[STATE] if meta is not None else None
        except Exception as err:
            raise self._unreadable(step, _short_reason(err, where)) from err
        if stored is None:
            raise self._unreadable(step, "no train state")
        saved, wanted = _describe(stored), _describe(abstract_state)
        missing = sorted(set(wanted) - set(saved))
        extra = sorted(set(saved) - set(wanted))
        if missing or extra:
            what = f"missing {missing[0]}" if missing else f"unexpected {extra[0]}"
            count = len(missing) + len(extra)
            raise CheckpointError(
                f"checkpoint {where} does not match this model/optimiser ({what}; {count} differences)"
            )
        for name, shape in wanted.items():
            if saved[name] != shape:
                raise CheckpointError(
                    f"checkpoint {where} does not match this model: {name} is {saved[name]}, expected {shape}"
                )

    def _unreadable(self, step: int, reason: str) -> CheckpointError:
        """The damaged step, why, and the way forward: the previous complete step, if any."""
        earlier = [s for s in self.steps() if s < step]
        if earlier:
            way = (
                f"step {earlier[-1]} is the previous complete one: resume from it with "
                f"--config.train.resume_step={earlier[-1]} (step {step} is kept)"
            )
        else:
            way = f"no complete step precedes it: move {self.step_dir(step)} elsewhere to start afresh"
        return CheckpointError(f"checkpoint {self.step_dir(step)} cannot be read ({reason}); {way}")

    def supersede(self, step: int) -> tuple[list[int], str]:
        """Move the steps later than ``step`` (the one just restored) to ``superseded/<s>-<time>``.

        Called on every process: the listing comes from each one's manager, process 0 moves
        (the directory is shared), and all wait for it before reading the directory again.
        Returns (the steps moved, the folder they went to). A remote move is a copy, then
        a delete of the original: cut short, it leaves the step in place or both copies.
        """
        later = [s for s in self.steps() if s > step]
        folder = paths.join(self.directory, SUPERSEDED)
        multi = jax.process_count() > 1
        if multi:  # nobody may still be reading a step that is about to move
            multihost_utils.sync_global_devices("flam checkpoints: before superseding")
        if later and jax.process_index() == 0:
            paths.makedirs(folder)
            stamp = time.strftime("%Y%m%d-%H%M%S")
            for s in later:
                target = paths.join(folder, f"{s}-{stamp}")
                paths.path(self.step_dir(s)).rename(paths.path(target))
        if multi:
            multihost_utils.sync_global_devices("flam checkpoints: superseded")
        if later:
            self.manager.reload()  # its cached list still names the moved steps
        return later, folder

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def _short_reason(err: Exception, step_dir: str) -> str:
    """A tensorstore error cut to the file at fault and its last words; others as type: text.

    E.g. ``state/manifest.ocdbt: Error decoding manifest: Encoded length (7) is less than
    minimum length (16)`` instead of five nested contexts and the store's JSON spec.
    """
    text = _SPEC_TAIL.sub("", " ".join(str(err).split()))
    parts = text.split(": ")
    if len(parts) > 1 and parts[0].isupper():  # an absl status code: DATA_LOSS, OUT_OF_RANGE, ...
        named = [i for i, part in enumerate(parts) if _QUOTED.search(part)]
        last = named[-1] if named else 0
        where = _QUOTED.findall(parts[last])[-1] if named else ""
        reason = ": ".join(parts[last + 1 :]) or parts[-1]
        base = step_dir.rstrip("/") + "/"
        if where.startswith(base) and where != base:
            reason = f"{where[len(base) :].rstrip('/')}: {reason}"
    else:
        reason = f"{type(err).__name__}: {text}"
    return reason if len(reason) <= 200 else reason[:197] + "..."
