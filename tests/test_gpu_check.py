"""`python benchmarks/gpu_check.py --smoke` (issue 16) runs every path of the GPU check on the CPU
with tiny sizes: MAE training with torch.compile off and on against transformers, MaskGIT sampling
at 8 and 12 steps against its ideal time, the image-folder pipeline against the training speed;
every row is printed and written to --out with finite positive numbers, and the ratios are the
quotients of the numbers beside them."""
import json
import math
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_smoke_runs_every_row(tmp_path):
    out = tmp_path / "gpu_check.json"
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--smoke", "--out", str(out)],
                            capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    rows = report["rows"]
    names = [r["check"] for r in rows]
    assert len(rows) == 5, names
    assert names[0].endswith("compile off") and "compile on (aot_eager)" in names[1]
    assert ["8 steps" in names[2], "12 steps" in names[3]] == [True, True]
    assert names[4].startswith("data: image folder, 2 workers")
    for row in rows:
        assert "skipped" not in row, row  # compile runs on this CPU torch: no row may be left out
        assert row["check"] in result.stdout  # printed in the table too
        for key in ("images_per_s", "reference_images_per_s", "ratio"):
            assert math.isfinite(row[key]) and row[key] > 0, (row["check"], key, row[key])
        assert math.isclose(row["ratio"], row["images_per_s"] / row["reference_images_per_s"], rel_tol=1e-9)
    for row in rows[:2]:  # MFU = images/s x FLOPs per image / peak
        assert math.isclose(row["mfu"], row["images_per_s"] * report["flops_per_image"] / (report["peak_tflops"] * 1e12))
        assert math.isclose(row["reference_mfu"],
                            row["reference_images_per_s"] * report["flops_per_image"] / (report["peak_tflops"] * 1e12))
    best = max(rows[:2], key=lambda r: r["images_per_s"])  # the data is judged against the faster training row
    assert rows[4]["reference_images_per_s"] == best["images_per_s"]
    assert rows[4]["verdict"] == ("the data keeps up" if rows[4]["ratio"] >= 1 else "the data does NOT keep up")
    assert "random weights" in result.stdout


def test_flops_per_image_is_the_documented_formula():
    """The FLOP count the MFU uses, written out here for MAE-B/16 from the formula in the docstring."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from gpu_check import GPU
        from mae_step import model_flops
    finally:
        sys.path[:] = [p for p in sys.path if p != str(ROOT / "benchmarks")]
    c = GPU.mae
    d, e, tokens, kept, patch = 768, 512, 196, 49, 16 * 16 * 3
    encoder = 12 * (1 + kept) * (12 * d * d + 2 * (1 + kept) * d)
    decoder = 8 * (1 + tokens) * (12 * e * e + 2 * (1 + tokens) * e)
    forward = 2 * (kept * patch * d + encoder + (1 + kept) * d * e + decoder + (1 + tokens) * e * patch)
    assert model_flops(c) / c.batch == 3 * forward
    assert 55e9 < 3 * forward < 62e9  # 58.2 GFLOP per trained image
