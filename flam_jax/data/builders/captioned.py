"""``flam_captioned``: captioned clips read from the layouts corpora ship in, without
unpacking or exporting them first. The same features as ``flam_clips`` plus ``start_s``.

Configs (one reader module each; its docstring gives the layout):
- ``webdataset``: tar shards, ``KEY.flac|wav|mp3`` + ``KEY.json`` (``tar_shards.py``);
- ``huggingface``: parquet or ``save_to_disk`` arrow files with an audio column (``hf_datasets.py``);
- ``wavcaps``: WavCaps's metadata JSON files and audio folders (``wavcaps.py``);
- ``fsd50k``: FSD50K's ground-truth CSVs and audio folders (``fsd50k.py``).

Long recordings are cut into pieces of at most 10 s at build time (``common.py``'s rule);
items without audio or caption, and undecodable clips, are skipped and counted.
"""

import numpy as np
import tensorflow_datasets as tfds

from flam_jax.data.builders import common, fsd50k, hf_datasets, tar_shards, wavcaps


def reader_splits(config: str, folder: str) -> dict:
    """split → its items (``common.examples``' input) for reader ``config``."""
    if config == "webdataset":
        return {s: tar_shards.items(shards) for s, shards in tar_shards.shards(folder).items()}
    if config == "huggingface":
        return {s: hf_datasets.items(folder, s, files) for s, files in hf_datasets.files(folder).items()}
    if config == "wavcaps":
        wavcaps.tables(folder)  # fails now, not inside TFDS, when there are none
        return {"train": wavcaps.items(folder)}
    return {s: fsd50k.items(folder, s) for s in fsd50k.splits(folder)}


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
        text_list = tfds.features.Sequence(tfds.features.Text())
        return tfds.core.DatasetInfo(
            builder=self,
            description="Captioned clips of at most 10 s (FLAC, 48 kHz mono) from a corpus's own layout.",
            features=common.audio_features(
                captions=text_list,
                tags=text_list,
                source=tfds.features.Text(),
                licence=tfds.features.Text(),
                recording=tfds.features.Text(),
                start_s=tfds.features.Scalar(dtype=np.float32, doc="where the clip begins in its recording"),
            ),
        )

    def _split_generators(self, dl_manager):
        name = f"flam_captioned/{self.builder_config.name}"
        folder = common.manual_dir(dl_manager, name)
        return {
            split: self._generate_examples(items, name)
            for split, items in reader_splits(self.builder_config.name, folder).items()
        }

    def _generate_examples(self, items, name):
        return self.examples(items, name, cut=True)
