"""Apache Beam builds of the ``captioned`` kind: the records computed on any Beam runner
(the DirectRunner here; Dataflow, Spark or Flink unchanged), written by TFDS's Beam writer
as the same ArrayRecord shards and TFDS metadata as a one-process build.

    python data/build_dataset.py --kind=captioned --config=webdataset --manual-dir=gs://b/shards \\
        --data-dir=/mnt/tfds --beam=--runner=DataflowRunner,--project=P,--region=R,--temp_location=gs://b/tmp

Per split: the reader's units (shards, files, tables) → their items (one unit per worker at
a time) → a reshuffle that spreads the items over workers → decode, cut and encode
(``common.encode_item``, the one-process build's code). Skipped items are logged by the
worker that met them and counted; more than ``max_errors`` fail the pipeline with a
DataError, and TFDS then marks nothing built. The driver cannot name them at the end as a
one-process build does: the runner's log holds them.

apache-beam is optional (``requirements-beam.txt``): only a Beam build imports it.
"""

import logging

from flam_jax.data.builders import common
from flam_jax.errors import DataError

log = logging.getLogger(__name__)


def _beam():
    # Imported on use: apache-beam is an optional dependency (requirements-beam.txt).
    import apache_beam

    return apache_beam


def pipeline_options(args: list[str]):
    """Beam's PipelineOptions from command-line style ``args`` (``--runner=DirectRunner``)."""
    return _beam().options.pipeline_options.PipelineOptions(args)


def split_transform(items_of, split_units: list[str], builder_name: str, max_errors: int):
    """The PTransform TFDS runs for one split; ``items_of(unit)`` lists a unit's items."""
    beam = _beam()

    class Split(beam.PTransform):
        def expand(self, root):
            jobs = (
                root
                | "units" >> beam.Create(split_units)
                | "items" >> beam.FlatMap(_jobs, items_of)
                | "spread" >> beam.Reshuffle()
            )
            out = jobs | "encode" >> beam.FlatMap(_encode, builder_name).with_outputs(
                "skipped", main="records"
            )
            _ = (
                out.skipped
                | "count skipped" >> beam.combiners.Count.Globally()
                | "check skipped" >> beam.Map(_check, builder_name, max_errors)
            )
            return out.records

    return Split()


def _jobs(unit: str, items_of):
    for key, audio, features in items_of(unit):
        yield key, audio, features, True


def _encode(job, builder_name: str):
    key, records, problem = common.encode_item(job)
    if problem:
        log.warning("%s: %s: %s, skipped", builder_name, key, problem)
        yield _beam().pvalue.TaggedOutput("skipped", f"{key}: {problem}")
    yield from records


def _check(count: int, builder_name: str, max_errors: int) -> int:
    if count > max_errors:
        raise DataError(
            f"{builder_name}: {count} items skipped, more than {max_errors}; the build stopped and left "
            "nothing marked built (the runner's log names them; raise --max-errors to go on)"
        )
    if count:
        log.warning("%s: skipped %d items of this split (named in the runner's log)", builder_name, count)
    return count
