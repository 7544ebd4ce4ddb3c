"""Safe loading: a pickle whose unpickling would run code (here: create a marker file) is refused
by every loader entry point with a CheckpointError naming the file, and the code never runs."""
import builtins
import pickle
import shutil

import pytest
import torch

from mimkit.files.checkpoint_folder import STATE_FILE
from mimkit.engine.checkpoint import load_trainer_state, save_checkpoint
from mimkit.files.integrity import CHECKSUM_FILE
from mimkit.errors import CheckpointError
from mimkit.hub import (load_official_mae, load_state_dict_file, load_taming_vqgan, mae_from_official,
                        read_checkpoint, vqgan_from_taming, vqkd_from_unilm)
from mimkit.methods.mae import MAE, MAEConfig

pytestmark = pytest.mark.filterwarnings("ignore:Detected pickle protocol")


class Payload:
    """Unpickling this calls open(marker, "w"): the marker file appears if the pickle is executed."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return builtins.open, (self.marker, "w")


def tiny_mae() -> MAE:
    return MAE(MAEConfig(img_size=8, patch_size=4, in_chans=1, embed_dim=8, depth=1, num_heads=2,
                         decoder_embed_dim=8, decoder_depth=1, decoder_num_heads=2))


@pytest.fixture(params=["torch.save", "pickle protocol 2", "pickle protocol 4"])
def evil_file(request, tmp_path):
    """A checkpoint-looking file: real tensors beside the payload (under 'args', as MAE's scripts do)."""
    marker = tmp_path / "PWNED"
    obj = {"model": tiny_mae().state_dict(), "args": Payload(marker), "epoch": 3}
    path = tmp_path / "evil.pth"
    if request.param == "torch.save":
        torch.save(obj, path)
    else:
        path.write_bytes(pickle.dumps(obj, protocol=int(request.param[-1])))
    return path, marker, request.param


LOADERS = {
    "read_checkpoint": lambda p: read_checkpoint(p),
    "load_state_dict_file": lambda p: load_state_dict_file(p),
    "mae_from_official": lambda p: mae_from_official(p),
    "load_official_mae": lambda p: load_official_mae(tiny_mae(), p),
    "vqgan_from_taming": lambda p: vqgan_from_taming(p),
    "load_taming_vqgan": lambda p: load_taming_vqgan(None, p),
    "vqkd_from_unilm": lambda p: vqkd_from_unilm(p),
}


@pytest.mark.parametrize("name", sorted(LOADERS))
def test_every_hub_loader_refuses_a_code_pickle(name, evil_file):
    path, marker, _ = evil_file
    with pytest.raises(CheckpointError) as info:
        LOADERS[name](path)
    message = str(info.value)
    assert str(path) in message and "refusing to unpickle" in message
    assert not marker.exists(), "the pickled code ran"


def test_trainer_state_with_a_code_pickle_is_refused(tmp_path, evil_file):
    path, marker, kind = evil_file
    ckpt = save_checkpoint(tmp_path / "run", 1, tiny_mae(), {"method": "mae"}, {"step": 1})
    assert load_trainer_state(ckpt)["step"] == 1  # the honest state loads
    shutil.copy(path, ckpt / STATE_FILE)
    with pytest.raises(CheckpointError, match="corrupt"):  # the checksum refuses it before unpickling
        load_trainer_state(ckpt)
    assert not marker.exists()
    (ckpt / CHECKSUM_FILE).unlink()  # as a checkpoint of an older version: the unpickler must refuse it
    with pytest.raises(CheckpointError) as info:
        load_trainer_state(ckpt)
    # protocol 4's framing is refused before the payload is reached: "cannot read", also a refusal
    expected = "cannot read" if kind == "pickle protocol 4" else "refusing to unpickle"
    assert str(ckpt / STATE_FILE) in str(info.value) and expected in str(info.value)
    assert not marker.exists()


def test_the_same_tensors_without_the_payload_load(tmp_path):
    sd = tiny_mae().state_dict()
    torch.save({"model": sd, "epoch": 3}, tmp_path / "ok.pth")
    loaded = read_checkpoint(tmp_path / "ok.pth")
    assert loaded.extra == {"epoch": 3} and all(torch.equal(loaded.state_dict[k], v) for k, v in sd.items())
