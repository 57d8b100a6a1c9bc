"""laion_clap 1.1.7 as the oracle of the LAION-CLAP and HTS-AT converters, built offline.

laion_clap's model code lives in a top-level package ``clap_module`` inside the installed
``laion_clap`` folder (its own hook puts that folder on sys.path); importing ``laion_clap``
itself would pull its training and download helpers, so only ``clap_module`` is imported.
It imports torchvision for its image models alone; PyPI's torchvision wheel is built for
CUDA torch and cannot load beside the CPU build here, so when torchvision does not import
an empty placeholder stands in for it (no torchvision code is on the audio or text path).
RoBERTa is built from a RobertaConfig instead of downloaded.
"""

from __future__ import annotations

import importlib.util
import sys
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from openflam_oracle import roberta_config, spread_weights

FRAME_REPEAT = 32  # HTS-AT repeats each of its 32 frames 32 times (utils.interpolate)


def _torchvision_placeholder() -> None:
    try:
        import torchvision  # noqa: F401
    except Exception:  # missing, or the CUDA wheel failing to register its ops
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        root, ops, misc, transforms = (
            types.ModuleType(n)
            for n in ("torchvision", "torchvision.ops", "torchvision.ops.misc", "torchvision.transforms")
        )
        misc.FrozenBatchNorm2d = type("FrozenBatchNorm2d", (), {})
        for name in ("Normalize", "Compose", "RandomResizedCrop", "InterpolationMode", "ToTensor"):
            setattr(transforms, name, type(name, (), {}))
        for name in ("Resize", "CenterCrop"):
            setattr(transforms, name, type(name, (), {}))
        root.ops, ops.misc, root.transforms = ops, misc, transforms
        sys.modules.update(
            {
                "torchvision": root,
                "torchvision.ops": ops,
                "torchvision.ops.misc": misc,
                "torchvision.transforms": transforms,
            }
        )


def clap_module():
    """laion_clap's ``clap_module`` package."""
    import transformers  # noqa: F401  (first: it probes torchvision's install once, for real)

    spec = importlib.util.find_spec("laion_clap")
    if spec is None:
        pytest.fail("laion_clap is not installed (the Makefile installs laion_clap==1.1.7 --no-deps)")
    folder = spec.submodule_search_locations[0]
    if folder not in sys.path:
        sys.path.append(folder)
    _torchvision_placeholder()
    import clap_module as module

    return module


def build_clap(audio_size: str, text_layers: int, seed: int = 0):
    """laion_clap's CLAP (HTSAT-``audio_size`` + RoBERTa of ``text_layers``), random and spread."""
    from transformers import RobertaModel

    module = clap_module()
    from clap_module import model as clap_model

    roberta_cfg = roberta_config(text_layers)

    class OfflineRoberta:
        @staticmethod
        def from_pretrained(*args, **kwargs):
            return RobertaModel(roberta_cfg, add_pooling_layer=True)

    torch.manual_seed(seed)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(clap_model, "RobertaModel", OfflineRoberta)
        model, _ = module.create_model(
            f"HTSAT-{audio_size}", "roberta", "", precision="fp32", device="cpu", enable_fusion=False
        )
    spread_weights(model, seed)
    return model.eval()


def _stepped_optimizer(model):
    """AdamW after one step with LAION-CLAP's own cosine schedule, which stores numpy
    floats as the learning rates (what its checkpoints' "optimizer" entry holds)."""
    from training.scheduler import cosine_lr  # laion_clap/training, on sys.path beside clap_module

    params = [p for p in model.parameters() if p.requires_grad][:4]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    for p in params:
        p.grad = torch.zeros_like(p)
    optimizer.step()
    cosine_lr(optimizer, 1e-4, 2, 10)(5)
    assert isinstance(optimizer.param_groups[0]["lr"], np.floating)
    return optimizer


def save_training_checkpoint(model, path: str) -> str:
    """As LAION-CLAP's training saves it (training/main.py): DDP-prefixed keys in
    ``state_dict`` beside the epoch, its name and the optimizer, with the ``position_ids``
    buffer transformers < 4.31 stored."""
    state = {f"module.{k}": v for k, v in model.state_dict().items()}
    state["module.text_branch.embeddings.position_ids"] = torch.arange(514)[None]
    optimizer = _stepped_optimizer(model)
    torch.save(
        {"epoch": 45, "name": "offline-test", "state_dict": state, "optimizer": optimizer.state_dict()}, path
    )
    return path


def save_htsat_release(model, path: str, sample_rate: int = 32000) -> str:
    """The audio branch in the HTS-AT release's PyTorch Lightning layout (``sed_model.``
    keys, and the optimizer, scheduler and callback entries Lightning writes beside them),
    with the mel filterbank of ``sample_rate`` that release's front end stores."""
    import librosa

    state = {
        "sed_model." + k[len("audio_branch.") :]: v
        for k, v in model.state_dict().items()
        if k.startswith("audio_branch.")
    }
    mel = librosa.filters.mel(sr=sample_rate, n_fft=1024, n_mels=64, fmin=50, fmax=14000).T
    state["sed_model.logmel_extractor.melW"] = torch.from_numpy(np.ascontiguousarray(mel))
    optimizer = _stepped_optimizer(model.audio_branch)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 1.0)
    checkpoint = {
        "epoch": 30,
        "global_step": 100000,
        "pytorch-lightning_version": "1.5.9",
        "state_dict": state,
        "callbacks": {"ModelCheckpoint": {"monitor": "mAP", "best_model_score": torch.tensor(0.471)}},
        "optimizer_states": [optimizer.state_dict()],
        "lr_schedulers": [scheduler.state_dict()],
    }
    torch.save(checkpoint, path)
    return path


def fusion_audio_keys(audio_size: str = "tiny") -> dict[str, torch.Tensor]:
    """The extra audio tensors of laion_clap's fusion model (its default ``aff_2d``),
    built with its own create_htsat_model."""
    clap_module()
    from clap_module.htsat import create_htsat_model
    from clap_module.model import CLAPAudioCfp

    cfg = CLAPAudioCfp(model_type="HTSAT", model_name=audio_size, hop_size=480)
    fused = create_htsat_model(cfg, enable_fusion=True, fusion_type="aff_2d").state_dict()
    plain = create_htsat_model(cfg, enable_fusion=False).state_dict()
    return {f"audio_branch.{k}": v for k, v in fused.items() if k not in plain}


@torch.no_grad()
def audio_outputs(model, wave: np.ndarray) -> dict[str, np.ndarray]:
    """laion_clap's global embedding (its own get_audio_embedding), the tower's frames
    before projection, and FLAM's frame embeddings computed from them."""
    x = torch.from_numpy(wave)
    out = model.encode_audio({"waveform": x}, device="cpu")
    fine = out["fine_grained_embedding"]  # (B, 1024, C): 32 frames, each repeated 32 times
    frames = fine[:, ::FRAME_REPEAT]
    assert torch.equal(fine, frames.repeat_interleave(FRAME_REPEAT, dim=1))
    global_ = model.get_audio_embedding([{"waveform": w} for w in x])
    return {
        "features": frames.numpy(),
        "pooled": out["embedding"].numpy(),
        "frames": F.normalize(model.audio_projection(frames), dim=-1).numpy(),
        "global": global_.numpy(),
    }


@torch.no_grad()
def text_embeddings(model, texts: list[str], tokenizer_dir: str) -> np.ndarray:
    """laion_clap's get_text_embedding of RoBERTa tokens as its hook makes them (77, padded)."""
    import os

    from transformers import RobertaTokenizer

    tokenizer = RobertaTokenizer(
        os.path.join(tokenizer_dir, "vocab.json"), os.path.join(tokenizer_dir, "merges.txt")
    )
    tokens = tokenizer(texts, padding="max_length", truncation=True, max_length=77, return_tensors="pt")
    return model.get_text_embedding({k: tokens[k] for k in ("input_ids", "attention_mask")}).numpy()
