"""openflam 1.0.2's losses on one rank, for tests/parity/test_loss_parity.py.

``openflam_objective`` runs FLAM's own ``loss`` method (global InfoNCE via ``CLIPLoss``,
``FramewiseContrastiveLoss`` × sed_loss_weight, ``PriorLoss``) on given embeddings: a
stand-in object carries the attributes FLAM's methods read, with the encoders replaced
by the precomputed features, so no weights are built or downloaded. The text-head
output h has two columns: β = h[:, 0] and log α = h[:, 1].

Run as a script it is one rank of a gloo torch.distributed job:
``python openflam_loss_worker.py RANK WORLD PORT inputs.npz outputs.npz``.
"""

import os
import sys
import types

import lightning as L
import numpy as np
import torch
from openflam.module.contrastive_loss import CLIPLoss, FramewiseContrastiveLoss, PriorLoss
from openflam.module.model import FLAM


def _stand_in(fabric):
    """An object with exactly the attributes FLAM.loss and its callees read."""
    me = types.SimpleNamespace()
    me.no_global_loss = False
    me.sed_loss_weight = 200.0
    me.sed_clip_logit_scale = 0
    me.aed_logit_scale = torch.nn.Parameter(torch.zeros([]), requires_grad=False)
    me.aed_logit_bias = 0
    me.loss_fn = CLIPLoss(fabric)
    me.local_contrastive_loss_fn = FramewiseContrastiveLoss(fabric)
    me.prior_loss = PriorLoss(fabric)
    me.fc_per_text_logit_bias = lambda h: h[:, :1]
    me.fc_per_text_logit_scale = lambda h: h[:, 1:2]
    me._get_inputs = lambda batch: (batch, None)
    me._get_features = lambda audio, text, device=None: audio["features"]
    for name in ("global_contrastive_loss", "local_contrastive_loss", "loss"):
        setattr(me, name, types.MethodType(getattr(FLAM, name), me))
    return me


def openflam_objective(fabric, arrays: dict, rank: int, world: int) -> dict:
    """This rank's FLAM loss, its terms, and the gradients of that rank's backward pass."""

    def block(name):
        x = arrays[name]
        n = len(x) // world
        return torch.tensor(x[rank * n : (rank + 1) * n])

    leaves = {
        "global_audio": block("global_audio"),
        "global_text": block("global_text"),
        "frames": block("frames"),
        "text_emb": block("text_emb"),
        "heads": block("heads"),
    }
    for leaf in leaves.values():
        leaf.requires_grad_(True)
    me = _stand_in(fabric)
    me.logit_scale_a = torch.nn.Parameter(torch.tensor(float(arrays["logit_scale"])))
    batch = {
        "global_batch": {
            "features": {
                "global_audio_features": leaves["global_audio"],
                "text_features": leaves["global_text"],
            }
        },
        "sed_batch": {
            "features": {
                "local_audio_features": leaves["frames"],
                "text_features": leaves["text_emb"],
                "text_branch_output": leaves["heads"],
            },
            "framewise_label": block("labels"),
            "audio_mask": block("audio_mask"),
            "text_mask": block("text_mask"),
        },
    }
    metrics = me.loss(None, None, batch=batch)
    metrics["loss"].backward()
    terms = ("loss", "global_contrastive_loss", "local_contrastive_loss", "prior_loss")
    out = {k: float(torch.as_tensor(metrics[k]).detach()) for k in terms}
    out.update({f"grad_{k}": v.grad.numpy() for k, v in leaves.items()})
    out["grad_logit_scale"] = float(me.logit_scale_a.grad)
    return out


def main() -> None:
    rank, world, port, inputs, outputs = sys.argv[1:]
    rank, world = int(rank), int(world)
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=port,
        WORLD_SIZE=str(world),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        NODE_RANK="0",
    )
    torch.set_num_threads(1)
    # Fabric reads the rendezvous variables above: the ranks are launched externally.
    fabric = L.Fabric(accelerator="cpu", devices=world, strategy="ddp")
    fabric.launch()
    assert fabric.world_size == world and fabric.global_rank == rank
    result = openflam_objective(fabric, dict(np.load(inputs)), rank, world)
    np.savez(outputs, **result)
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
