"""``flam_captioned``: captioned clips read from the layouts corpora ship in, without
unpacking or exporting them first. The same features as ``flam_clips`` plus ``start_s``.

Configs (one reader module each; its docstring gives the layout):
- ``webdataset``: tar shards, ``KEY.flac|wav|mp3`` + ``KEY.json`` (``tar_shards.py``);
- ``huggingface``: parquet or ``save_to_disk`` arrow files with an audio column (``hf_datasets.py``);
- ``wavcaps``: WavCaps's metadata JSON files and audio folders (``wavcaps.py``);
- ``fsd50k``: FSD50K's ground-truth CSVs and audio folders (``fsd50k.py``).

Long recordings are cut into pieces of at most 10 s at build time (``common.py``'s rule);
items without audio or caption, and undecodable clips, are skipped and counted. Each
reader splits its input into units (shards, files, tables) that an Apache Beam build
(``beam_build.py``) spreads over workers.
"""

import functools
import itertools
from collections.abc import Iterator

import numpy as np
import tensorflow_datasets as tfds

from flam_jax.data.builders import beam_build, common, fsd50k, hf_datasets, tar_shards, wavcaps


def units(config: str, folder: str) -> dict[str, list[str]]:
    """split → its units of work for reader ``config``: shards, files, tables or the split."""
    if config == "webdataset":
        return tar_shards.shards(folder)
    if config == "huggingface":
        return hf_datasets.files(folder)
    if config == "wavcaps":
        return {"train": wavcaps.tables(folder)}
    return {split: [split] for split in fsd50k.splits(folder)}


def unit_items(config: str, folder: str, split: str, unit: str) -> Iterator[tuple[str, object, dict]]:
    """The items (``common.examples``' input) of one unit."""
    if config == "webdataset":
        return tar_shards.items(unit)
    if config == "huggingface":
        return hf_datasets.items(folder, split, unit)
    if config == "wavcaps":
        return wavcaps.items(folder, unit)
    return fsd50k.items(folder, unit)


def split_items(config: str, folder: str, split: str, split_units: list[str]):
    return itertools.chain.from_iterable(unit_items(config, folder, split, u) for u in split_units)


class FlamCaptioned(common.Builder):
    VERSION = tfds.core.Version("1.0.0")
    BUILDER_CONFIGS = (
        tfds.core.BuilderConfig(name="webdataset", description="webdataset tar shards"),
        tfds.core.BuilderConfig(name="huggingface", description="Hugging Face parquet / arrow files"),
        tfds.core.BuilderConfig(name="wavcaps", description="WavCaps metadata JSON + audio"),
        tfds.core.BuilderConfig(name="fsd50k", description="FSD50K ground truth + audio"),
    )
    MANUAL_DOWNLOAD_INSTRUCTIONS = "The corpus as distributed (see flam_jax/data/builders/captioned.py)."

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="Captioned clips of at most 10 s (FLAC, 48 kHz mono) from a corpus's own layout.",
            features=common.captioned_clip_features(
                start_s=tfds.features.Scalar(dtype=np.float32, doc="where the clip begins in its recording")
            ),
        )

    def _split_generators(self, dl_manager):
        name = f"flam_captioned/{self.builder_config.name}"
        folder = common.manual_dir(dl_manager, name)
        return {
            split: self._generate_examples(folder, split, split_units, name)
            for split, split_units in units(self.builder_config.name, folder).items()
        }

    def _generate_examples(self, folder, split, split_units, name):
        config = self.builder_config.name
        if self.beam:
            return beam_build.split_transform(
                functools.partial(unit_items, config, folder, split), split_units, name, self.skips.max_errors
            )
        return self.examples(split_items(config, folder, split, split_units), name, cut=True)
