"""benchmarks/data_pipeline.py cannot rot: its --quick mode runs end to end (image sets, crops per
core against the PIL baseline, the training overhead) and prints every figure; its baseline crop is
torchvision's recipe (a uint8 crop of the right size, which a full-image box reproduces exactly)."""
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def test_quick_mode_prints_every_figure():
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "data_pipeline.py"), "--quick"],
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-2000:]
    rows = re.findall(r"^(500x375 JPEG q90|500x375 PNG|1600x1200 JPEG q90)\s+(\d+)\s+(\d+)\s+(\d+)\s+([\d.]+)x$",
                      run.stdout, re.MULTILINE)
    assert len(rows) == 4 and all(int(base) > 0 and int(ours) > 0 for _, _, base, ours, _ in rows)
    assert re.search(r"data-to-step overhead\s+[+-]\d+\.\d%", run.stdout)
    assert "load average before" in run.stdout and "load average after" in run.stdout


def test_baseline_crop_is_the_plain_recipe(tmp_path, monkeypatch):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import data_pipeline
    finally:
        sys.path.pop(0)
    rng = np.random.default_rng(0)
    data_pipeline.smooth_photo(40, 30, rng).save(tmp_path / "a.png")
    # scale (1, 1) with the image's own aspect: every try fails but the whole image fits -> no crop
    monkeypatch.setattr(data_pipeline.random, "random", lambda: 0.9)  # no flip
    crop = data_pipeline.baseline_crop(str(tmp_path / "a.png"), 16, scale=(1.0, 1.0), ratio=(4 / 3, 4 / 3))
    expected = np.array(Image.open(tmp_path / "a.png").resize((16, 16), Image.BICUBIC))
    assert crop.dtype == torch.uint8 and torch.equal(crop, torch.from_numpy(expected).permute(2, 0, 1))
