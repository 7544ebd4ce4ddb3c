"""Adding a method touches its own file and one registration: a toy method defined here, outside
the package, trains two steps with `mimkit train`, loads back and is probed, through public API only."""
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from mimkit import registry
from mimkit.cli import main
from mimkit.methods import Method, Output

pytestmark = pytest.mark.usefixtures("one_thread")


@dataclass
class ToyConfig:
    img_size: int = 8
    in_chans: int = 1
    width: int = 6


class ToyAutoencoder(Method):
    """A linear autoencoder of whole images: the smallest thing the contract accepts."""

    method_name, config_class = "toy_autoencoder", ToyConfig
    reconstructs_pixels = True

    def __init__(self, config: ToyConfig):
        super().__init__()
        self.config = config
        pixels = config.in_chans * config.img_size ** 2
        self.encoder, self.decoder = nn.Linear(pixels, config.width), nn.Linear(config.width, pixels)

    def forward(self, images: torch.Tensor, **_) -> Output:
        target = images.flatten(1)
        loss = ((self.decoder(self.encoder(target)) - target) ** 2).mean()
        return Output(loss, {"loss": loss.detach()})

    def features(self, images: torch.Tensor, pool: str = "cls") -> torch.Tensor:
        return self.encoder(images.flatten(1))

    def reconstruct(self, images: torch.Tensor) -> dict:
        return {"original": images, "reconstruction": self.decoder(self.encoder(images.flatten(1))).view_as(images)}


TOY_PRESET = {"method": "toy_autoencoder", "model": {"img_size": 8},
              "data": {"name": "digits", "image_size": 8},
              "optim": {"lr": 0.01, "warmup_steps": 0},
              "train": {"steps": 2, "batch_size": 16, "progress": False, "picture_every": 2}}


@pytest.fixture
def toy_registered(monkeypatch):
    """The toy method in the table for this test only (the table is restored afterwards)."""
    monkeypatch.setattr(registry, "_TABLE", registry.method_registry())
    registry.register_method(ToyAutoencoder, presets={"toy_digits": TOY_PRESET},
                             descriptions={"toy_digits": "a linear autoencoder of 8 px digits (a test of the contract)"})


def test_a_method_defined_outside_the_package_trains_loads_and_is_probed(toy_registered, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "toy_digits", "--out", str(run)]) == 0
    assert (run / "pictures" / "reconstruction_step_00000002.png").is_file()  # it reconstructs pixels
    model, config = registry.load_model(run)
    assert isinstance(model, ToyAutoencoder) and config.method == "toy_autoencoder"
    again = ToyAutoencoder.from_pretrained(run)
    assert torch.equal(again.encoder.weight, model.encoder.weight)
    assert main(["eval", "knn", str(run), "--limit", "100"]) == 0
    assert "toy_autoencoder" in capsys.readouterr().out
    assert main(["presets"]) == 0 and "toy_digits" in capsys.readouterr().out


def test_registration_checks_the_contract(toy_registered):
    class NotAMethod(nn.Module):
        pass

    with pytest.raises(Exception, match="not a mimkit.methods.base.Method subclass"):
        registry.register_method(NotAMethod)
    with pytest.raises(Exception, match="has no description"):
        registry.register_method(ToyAutoencoder, presets={"toy_other": TOY_PRESET})
    with pytest.raises(Exception, match="already used by another method"):
        registry.register_method(type("Other", (ToyAutoencoder,), {"method_name": "other"}),
                                 presets={"mae_demo_fmnist": TOY_PRESET}, descriptions={"mae_demo_fmnist": "x"})
