"""The README's "Your own images" example, run as written on a small colour folder with train/ and val/."""
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mimkit.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")
README = Path(__file__).resolve().parents[1] / "README.md"


def example_commands() -> list[list[str]]:
    """The bash block after <!-- own-images-example -->, one argv per command (continuations joined)."""
    text = README.read_text()
    block = re.search(r"<!-- own-images-example -->\n```bash\n(.*?)```", text, re.S).group(1)
    lines = block.replace("\\\n", " ").strip().splitlines()
    return [shlex.split(line.split("#")[0]) for line in lines]


def write_class_folder(root: Path, per_class: int, rng) -> None:
    """4 classes of 32 px colour PNGs, each with its own hue and a bar at its own height."""
    for k, colour in enumerate([(200, 40, 40), (40, 200, 40), (40, 40, 200), (200, 200, 40)]):
        folder = root / f"class_{k}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            pixels = np.clip(rng.normal(0, 30, (32, 32, 3)) + colour, 0, 255).astype(np.uint8)
            pixels[4 + 6 * k: 9 + 6 * k, 3:29] = 255
            Image.fromarray(pixels).save(folder / f"{i:03d}.png")


def test_own_images_example_runs_as_written(tmp_path, monkeypatch, capsys):
    rng = np.random.default_rng(0)
    write_class_folder(tmp_path / "my_images" / "train", 30, rng)
    write_class_folder(tmp_path / "my_images" / "val", 10, rng)
    monkeypatch.chdir(tmp_path)
    commands = example_commands()
    assert [c[:2] for c in commands] == [["mimkit", "train"], ["mimkit", "reconstruct"], ["mimkit", "eval"]]
    for argv in commands:
        assert main(argv[1:]) == 0, argv
    out = capsys.readouterr().out
    assert "pixel statistics of my_images/train measured on 120 images" in out
    assert (tmp_path / "runs" / "mine" / "reconstruction.png").is_file()
    assert "test data   my_images/val: 40 images" in out  # reconstruct draws test images
    assert "train data   my_images/train: 120 images, 4 classes (class_0 30, class_1 30, class_2 30, class_3 30)" in out
    assert "test data    my_images/val: 40 images, 4 classes (class_0 10, class_1 10, class_2 10, class_3 10)" in out
