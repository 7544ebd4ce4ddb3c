"""The method contract: what every mimkit method (and image tokenizer) is and may declare.

Every method is an nn.Module subclass of `Method` that states in its own file:
    method_name   the name in the method table, in config.json ("method") and on the command line
    config_class  its config dataclass (every field with a default; checked in __post_init__ or
                  by the model's own checks)
and provides
    __init__(config)               build from that dataclass
    forward(**batch) -> Output     a training step's loss and logs (batch keys: "images",
                                   "labels", and whatever its capabilities below add)
    features(images, pool) -> (N, D)   frozen features for the probes (encoders; pool "cls" or "mean")
Its presets (a dict name -> run-config tree) and their one-line descriptions are registered with
it: `mimkit.registry.register_method(MyMethod, presets=..., descriptions=...)`.

Capabilities a method declares as class attributes; the run assembly (mimkit.train) and the
Trainer ask these, never hasattr or method names:
    reconstructs_pixels  reconstruct(images) -> {"name": (N, C, H, W) in [0, 1], ...}: pictures
    frozen_tokenizer     works on the codes of a frozen tokenizer: its config has `tokenizer` (a
                         checkpoint path) and `tokenizer_config`; `self.tokenizer` (BEiT v2, MaskGIT, MAGE)
    generates            token_logits(tokens, labels): samples and inpaints with mimkit.generation
    distils_teacher      distils a frozen teacher: its config has `teacher` and `teacher_dim`;
                         attach_teacher(teacher) before training
    is_tokenizer         encode(images) -> (N, h, w) codes, codebook_size, grid_size, fingerprint()
    input_views(config)  images per example the Trainer augments (2: "images" and "images_2")
Randomness inside a method (masks, views) takes a `torch.Generator` where a test needs one.

`save_pretrained(directory)` / `from_pretrained(path)` read and write the same folder as a
checkpoint (config.json + model.safetensors + checksums.sha256), with nothing installed at import time.
"""
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn

from ..config_schema import from_dict
from ..errors import CheckpointError
from ..files.checkpoint_folder import load_weights, read_config, resolve_checkpoint
from ..files.pretrained_folder import resolve_pretrained, write_pretrained


class Method(nn.Module):
    """Base class of every method and tokenizer (see the module docstring for the contract)."""

    method_name: ClassVar[str] = ""
    config_class: ClassVar[type | None] = None
    reconstructs_pixels: ClassVar[bool] = False
    frozen_tokenizer: ClassVar[bool] = False
    generates: ClassVar[bool] = False
    distils_teacher: ClassVar[bool] = False
    is_tokenizer: ClassVar[bool] = False

    @classmethod
    def input_views(cls, config) -> int:
        """Augmented views of every image a training batch carries (1: "images")."""
        return 1

    def save_pretrained(self, directory: str | Path, run: str | Path | None = None) -> Path:
        """Write this model to `directory` (weights, config.json, model card, checksums); `run`
        (its run folder or checkpoint) supplies the data/train config and metrics of the card."""
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        return write_pretrained(self.method_name, self.config, state, directory, run)

    @classmethod
    def from_pretrained(cls, path_or_repo_id: str | Path, device: str | torch.device = "cpu", **_) -> "Method":
        """The model of a save_pretrained folder, run folder, checkpoint or locally cached Hugging
        Face repo, in eval mode; CheckpointError when it holds another method."""
        folder = resolve_checkpoint(resolve_pretrained(path_or_repo_id))
        saved = read_config(folder)
        if saved.get("method") != cls.method_name:
            raise CheckpointError(f"{path_or_repo_id} holds a {saved.get('method')} model, not {cls.method_name}; "
                                  "use mimkit.registry.from_pretrained for any method")
        model = cls(from_dict(cls.config_class, saved.get("model") or {}, "model"))
        load_weights(model, folder)
        return model.to(device).eval()

    # huggingface_hub.ModelHubMixin's hook names, over the same folder layout
    def _save_pretrained(self, save_directory) -> None:
        self.save_pretrained(save_directory)

    @classmethod
    def _from_pretrained(cls, *, model_id, map_location="cpu", **_):
        return cls.from_pretrained(model_id, map_location)
