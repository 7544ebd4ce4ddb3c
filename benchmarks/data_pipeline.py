"""What mimkit's data pipeline for photographs costs: training crops per second per core against a
plain PIL baseline, and the data-to-step overhead of training a small MAE with data workers.

1. Crops per core (one process, torch threads 1): mimkit's ImageFolder training item (RandomResizedCrop
   box drawn on the original, JPEG decoded at the draft scale the crop allows, only the crop resized
   to S, flip, uint8 tensor) against the baseline written below as torchvision does it: PIL open +
   convert RGB + RandomResizedCrop box on the original + crop + bicubic resize to S + uint8 tensor.
   Both are timed in alternating rounds over the same files (load from other processes hits both
   alike); the medians are reported, with mimkit / baseline. Image sets, generated here: 500x375
   JPEGs (quality 90) and PNGs of smooth random content (low-frequency noise upsampled, mid-frequency
   texture, a little pixel noise, so JPEG sizes are realistic), and 1600x1200 JPEGs (camera-sized).
   The draft decodes at 1/k only when the crop keeps >= k*S pixels a side, so at S = 224 on 500x375
   images (short side 375 < 2 * 224) it never applies and mimkit can only match the baseline.
2. Overhead: a small MAE (mimkit's Trainer, as `mimkit train` builds it) trained on the 500x375
   JPEGs with data.num_workers workers, against the same steps fed from pre-decoded uint8 batches in
   memory: overhead = (time per step with the loader - in memory) / in memory. On a machine with
   few cores the workers also take CPU from the step; the output prints `uptime`'s load.

    python benchmarks/data_pipeline.py            # ~2-3 min on 2 cores
    python benchmarks/data_pipeline.py --quick    # seconds: tiny sets, few steps (tests/test_benchmarks_data.py)
"""
import argparse
import math
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def smooth_photo(width: int, height: int, rng: np.random.Generator) -> Image.Image:
    """Random content with the spectrum of a photo: big smooth blobs, some texture, a little noise."""
    low = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize((width, height), Image.BICUBIC)
    mid = Image.fromarray(rng.integers(0, 256, (max(height // 8, 2), max(width // 8, 2), 3), dtype=np.uint8))
    mid = mid.resize((width, height), Image.BICUBIC)
    pixels = (np.asarray(low, np.float32) * 0.8 + (np.asarray(mid, np.float32) - 128) * 0.3
              + rng.normal(0, 4, (height, width, 3)))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def write_images(folder: Path, count: int, size: tuple[int, int], suffix: str, seed: int) -> Path:
    """`count` smooth photos of `size` (width, height) as .jpg (quality 90) or .png in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        options = {"quality": 90} if suffix == ".jpg" else {}
        smooth_photo(*size, rng).save(folder / f"{i:04d}{suffix}", **options)
    return folder


def baseline_crop(path: str, size: int, scale=(0.2, 1.0), ratio=(3 / 4, 4 / 3)) -> torch.Tensor:
    """torchvision's RandomResizedCrop + flip on a PIL image, written plainly -> uint8 (3, size, size)."""
    img = Image.open(path).convert("RGB")
    width, height = img.size
    box = None
    for _ in range(10):
        area = width * height * random.uniform(*scale)
        aspect = math.exp(random.uniform(math.log(ratio[0]), math.log(ratio[1])))
        w, h = int(round(math.sqrt(area * aspect))), int(round(math.sqrt(area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            left, top = random.randint(0, width - w), random.randint(0, height - h)
            box = (left, top, left + w, top + h)
            break
    if box is None:  # torchvision's fallback, enough for these aspect ratios: the whole image
        box = (0, 0, width, height)
    out = img.crop(box).resize((size, size), Image.BICUBIC)
    if random.random() < 0.5:
        out = out.transpose(Image.FLIP_LEFT_RIGHT)
    return torch.from_numpy(np.array(out)).permute(2, 0, 1)


def crops_per_second(folder: Path, size: int, rounds: int) -> tuple[float, float, float]:
    """(baseline images/s, mimkit images/s, ratio): medians over alternating rounds through every
    file after one untimed warm-up round each; the ratio is the median of the per-round ratios (a
    burst of load from other jobs then moves one round, not the result)."""
    from mimkit.data import ImageFolder

    data = ImageFolder(folder, channels=3, image_size=size, augment=True)
    n = len(data)
    base, ours = [], []
    for r in range(rounds + 1):
        data.set_epoch(r)
        start = time.perf_counter()
        for path in data.files:
            baseline_crop(path, size)
        b = n / (time.perf_counter() - start)
        start = time.perf_counter()
        for i in range(n):
            data[i]
        o = n / (time.perf_counter() - start)
        if r:  # round 0 warms caches and kernels on both sides
            base.append(b)
            ours.append(o)
    ratio = statistics.median(o / b for o, b in zip(ours, base))
    return statistics.median(base), statistics.median(ours), ratio


class DecodedBatches:
    """The same training crops, decoded once: a `get_batch` dataset the loader slices in memory."""

    augments_itself = True  # its items are final crops: the Trainer does not augment them

    def __init__(self, folder: Path, size: int):
        from mimkit.data import ImageFolder

        data = ImageFolder(folder, channels=3, image_size=size, augment=True)
        self.images = torch.stack([data[i]["images"] for i in range(len(data))])  # uint8 (N, 3, S, S)
        self.labels = torch.full((len(data),), -1, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.images)

    def get_batch(self, indices: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"images": self.images[indices], "labels": self.labels[indices]}


def step_seconds(folder: Path, out: Path, size: int, batch: int, workers: int, steps: int, in_memory: bool) -> float:
    """Median seconds per optimiser step of a small MAE on `folder`, fed by the loader or from memory."""
    from mimkit.config import load_config
    from mimkit.data import build_dataset
    from mimkit.engine.trainer import Trainer
    from mimkit.registry import build_model

    settings = [f"data.name={folder}", f"data.image_size={size}", f"model.img_size={size}", "model.patch_size=16",
                "model.in_chans=3", "model.embed_dim=96", "model.depth=2", "model.num_heads=4",
                "model.decoder_embed_dim=64", "model.decoder_depth=1", "model.decoder_num_heads=4",
                "model.pixel_mean=[0.5,0.5,0.5]", "model.pixel_std=[0.25,0.25,0.25]",
                f"train.batch_size={batch}", f"data.num_workers={workers}", "train.device=cpu", "train.threads=1",
                "train.progress=false", "train.picture_every=0", f"train.out_dir={out}"]
    config = load_config("mae_micro_fmnist", settings)
    data = DecodedBatches(folder, size) if in_memory else build_dataset(config.data, channels=3, training=True)
    torch.manual_seed(0)
    trainer = Trainer(build_model(config.method, config.model), config, data, augment=None)
    for _ in range(2):  # warm-up: workers start, first batches
        trainer.train_step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        trainer.train_step()
        times.append(time.perf_counter() - start)
    del trainer  # workers end
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny image sets and few steps (a smoke run)")
    parser.add_argument("--workers", type=int, default=1, help="data workers in the training comparison")
    args = parser.parse_args()
    torch.set_num_threads(1)
    random.seed(0)
    count, big, rounds, steps = (6, 3, 1, 2) if args.quick else (120, 30, 9, 20)
    batch = 4 if args.quick else 32
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        sets = {"500x375 JPEG q90": write_images(root / "jpeg", count, (500, 375), ".jpg", 0),
                "500x375 PNG": write_images(root / "png", count, (500, 375), ".png", 1),
                "1600x1200 JPEG q90": write_images(root / "big", big, (1600, 1200), ".jpg", 2)}
        kb = np.mean([p.stat().st_size for p in (root / "jpeg").iterdir()]) / 1024
        print(f"generated {count} + {count} + {big} images (500x375 JPEGs {kb:.0f} KB on average)\n")
        print("training crops per core (torch threads 1, in-process), images/s:")
        print(f"{'images':<20} {'S':>4} {'baseline':>9} {'mimkit':>8} {'ratio':>6}")
        for name, size in (("500x375 JPEG q90", 224), ("500x375 PNG", 224), ("500x375 JPEG q90", 112),
                           ("1600x1200 JPEG q90", 224)):
            base, ours, ratio = crops_per_second(sets[name], size, rounds)
            print(f"{name:<20} {size:>4} {base:>9.0f} {ours:>8.0f} {ratio:>5.2f}x")
        size = 64 if args.quick else 224
        memory = step_seconds(sets["500x375 JPEG q90"], root / "run_mem", size, batch, args.workers, steps, True)
        loader = step_seconds(sets["500x375 JPEG q90"], root / "run_io", size, batch, args.workers, steps, False)
        print(f"\nsmall MAE (ViT 96-d x 2, patch 16, S={size}, batch {batch}, torch threads 1), seconds per step:")
        print(f"  pre-decoded in memory   {memory:.4f}")
        print(f"  loader, {args.workers} worker(s)      {loader:.4f}")
        print(f"  data-to-step overhead   {100 * (loader - memory) / memory:+.1f}%")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
