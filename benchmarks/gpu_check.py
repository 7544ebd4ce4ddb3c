"""One-command check of a GPU machine: MAE training speed and MFU, MaskGIT sampling speed and
whether the data pipeline keeps up, each against a reference measured in the same run.

    python benchmarks/gpu_check.py                         # one GPU; meant for <= 8 minutes on an H100
    python benchmarks/gpu_check.py --out gpu_check.json    # also write the results as JSON
    python benchmarks/gpu_check.py --smoke                 # every path on CPU, tiny sizes, < 1 minute

Rows (`--smoke` runs the same rows with tiny models, 32 px images, 2 timed steps, 2 workers):

1. MAE-B/16 pretraining (ViT-B/16 encoder, 512-d x 8 decoder, 224 px, 75% masked), bf16 autocast,
   SDPA attention, fused AdamW (`mimkit.engine.optim.build_adamw` for both models: the same
   groups, betas, weight decay and fused flag), torch.compile off and on: mimkit's MAE against
   transformers' ViTMAEForPreTraining (attn_implementation="sdpa"), both built by
   benchmarks/mae_step.py. MFU = model FLOPs per image x images/s / peak, with
       FLOPs per image = 3 x (forward matmul FLOPs)   (backward = 2 x forward)
       forward = 2 x [kept patches x patch_dim x D                       (patch embedding)
                      + depth x (1 + kept) x (12 D^2 + 2 (1 + kept) D)   (encoder: qkv, proj, fc1, fc2, attention)
                      + (1 + kept) x D x D_dec                           (decoder embedding)
                      + dec_depth x (1 + L) x (12 D_dec^2 + 2 (1 + L) D_dec)   (decoder on all L tokens)
                      + (1 + L) x D_dec x patch_dim]                     (pixel prediction)
   with kept = L / 4 visible patches (mae_step.model_flops; elementwise work not counted) and the
   peak from --peak-tflops (default 989: H100 SXM bf16 dense; 756 for an H100 PCIe).
2. MaskGIT-256 sampling (preset maskgit_imagenet_256's 24 x 768 transformer on the 16x16 codes of
   preset maskgit_vqgan_imagenet_256's MaskGIT VQGAN) with `mimkit.generation.generate` at 8 and 12 steps,
   bf16 autocast, class labels, no guidance, VQGAN decoding included. Random weights: the speed is
   that of trained ones, the pictures are noise. Reference: the ideal time of the same work, T
   transformer forwards + one decode, each timed alone; ratio = sampled / ideal images/s, so 1 - ratio
   is the share of time the sampler's own work takes.
3. The data pipeline: mimkit's image folder (`build_dataset` + `make_loader`, the papers'
   RandomResizedCrop on the original image) over generated 500x375 JPEGs (smooth random colours
   plus noise, ~ImageNet's size; each written once and hard-linked many times so an epoch is long),
   --workers worker processes, against the best MAE training images/s of row 1: ratio >= 1 means
   the data keeps up. The loader runs alone here; while training, the main process needs CPU too.

Timing: warm-up steps first (they include compilation), then the median over 3 windows of timed
steps, with torch.cuda.synchronize() before each clock read on a GPU. A compile that fails is
reported as skipped, with its reason, and the rest still runs. --smoke compiles with the aot_eager
backend (dynamo tracing and AOT autograd, no code generation: inductor needs ~30 s per model on a
2-core CPU) and one torch thread; a GPU run uses inductor. Not yet run on a GPU by us (no GPU in
this project's sessions): the 8 minutes are an estimate, most of it compiling the two models, not a
measurement; it prints (and --out saves) the elapsed time of each part.
"""
import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # mae_step.py beside this file
from mae_step import BenchConfig, build_hf, build_mimkit, load_average, model_flops  # noqa: E402

from mimkit.data.config import DataConfig  # noqa: E402
from mimkit.data.factory import build_dataset  # noqa: E402
from mimkit.data.loader import make_loader  # noqa: E402
from mimkit.generation import MaskedTokenSampler, generate  # noqa: E402
from mimkit.presets import preset_dict  # noqa: E402
from mimkit.registry import build_model, run_config_from_dict  # noqa: E402


@dataclass
class Sizes:
    """Everything --smoke shrinks."""

    mae: BenchConfig
    maskgit: dict = field(default_factory=dict)  # overrides of maskgit_imagenet_256's model
    vqgan: dict = field(default_factory=dict)  # overrides of maskgit_vqgan_imagenet_256's model
    sample_batch: int = 64
    data_size: int = 224
    data_batch: int = 256
    distinct_jpegs: int = 512
    epoch_images: int = 256 * 128
    warmup: int = 5
    timed: int = 10


GPU = Sizes(mae=BenchConfig("MAE-B/16", 224, 16, 768, 12, 12, 512, 8, 16, batch=256))
SMOKE = Sizes(mae=BenchConfig("tiny MAE", 32, 8, 32, 1, 2, 32, 1, 2, batch=4),
              maskgit={"embed_dim": 32, "depth": 1, "num_heads": 2},
              vqgan={"img_size": 32, "base_channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1,
                     "code_dim": 8, "codebook_size": 64, "norm_groups": 4},
              sample_batch=4, data_size=32, data_batch=8, distinct_jpegs=8, epoch_images=96, warmup=2, timed=2)


# ------------------------------------------------------------------ timing
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds_per_call(fn, device: torch.device, warmup: int, timed: int, windows: int = 3) -> float:
    """Median over `windows` of the mean seconds per call of `fn` over `timed` calls, after `warmup` calls."""
    for _ in range(warmup):
        fn()
    results = []
    for _ in range(windows):
        sync(device)
        start = time.perf_counter()
        for _ in range(timed):
            fn()
        sync(device)
        results.append((time.perf_counter() - start) / timed)
    return statistics.median(results)


def free(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


# ------------------------------------------------------------------ 1. MAE training
def train_step(model, optimizer, images, hf: bool, device: torch.device):
    """Forward (bf16 autocast) + backward + optimizer step + zero_grad, as a closure."""
    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16):
            out = model(pixel_values=images) if hf else model(images)
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return step


def mae_images_per_s(build, c: BenchConfig, hf: bool, compiled: bool, backend: str, sizes: Sizes,
                     device: torch.device) -> float:
    """Training images/s of one model, eager or compiled (compilation happens in the warm-up)."""
    torch.manual_seed(0)
    model, optimizer = build(c, device)
    model.train()
    forward = torch.compile(model, backend=backend) if compiled else model
    images = torch.rand(c.batch, c.in_chans, c.img_size, c.img_size, device=device)
    try:
        return c.batch / seconds_per_call(train_step(forward, optimizer, images, hf, device), device,
                                          sizes.warmup, sizes.timed)
    finally:
        del model, optimizer, forward
        free(device)


def mae_rows(sizes: Sizes, device: torch.device, backend: str, peak: float, compile_on: bool) -> list[dict]:
    c = sizes.mae
    per_image = model_flops(c) / c.batch
    rows = []
    for compiled in ((False, True) if compile_on else (False,)):
        name = f"{c.name} train, compile {'on (' + backend + ')' if compiled else 'off'}"
        try:
            who = "mimkit"
            mine = mae_images_per_s(build_mimkit, c, False, compiled, backend, sizes, device)
            who = "transformers"
            ref = mae_images_per_s(build_hf, c, True, compiled, backend, sizes, device)
        except Exception as err:  # a compiler that cannot run here: said so, the other rows go on
            if not compiled:
                raise
            reason = (str(err).strip().splitlines() or [""])[0][:200]
            rows.append({"check": name, "skipped": f"{who}'s model: {type(err).__name__}: {reason}"})
            continue
        rows.append({"check": name, "images_per_s": mine, "reference": "transformers ViTMAEForPreTraining",
                     "reference_images_per_s": ref, "ratio": mine / ref, "mfu": mine * per_image / peak,
                     "reference_mfu": ref * per_image / peak})
    return rows


# ------------------------------------------------------------------ 2. MaskGIT sampling
def build_maskgit(sizes: Sizes, device: torch.device):
    """maskgit_imagenet_256's model over maskgit_vqgan_imagenet_256's MaskGIT VQGAN (both random), eval mode."""
    model = dict(preset_dict("maskgit_imagenet_256")["model"], **sizes.maskgit)
    tokenizer = dict(preset_dict("maskgit_vqgan_imagenet_256")["model"], **sizes.vqgan)
    model.update(tokenizer_config={"method": "maskgit_vqgan", "model": tokenizer})
    config = run_config_from_dict({"method": "maskgit", "model": model})
    return build_model("maskgit", config.model).to(device).eval()


def maskgit_rows(sizes: Sizes, device: torch.device) -> list[dict]:
    torch.manual_seed(0)
    model = build_maskgit(sizes, device)
    n = sizes.sample_batch
    labels = torch.randint(0, model.num_classes, (n,))
    h, w = model.grid_size
    tokens = torch.randint(0, model.codebook_size, (n, h * w), device=device)
    warmup, timed = max(1, sizes.warmup // 2), max(2, sizes.timed // 4)

    def autocast():
        return torch.autocast(device.type, dtype=torch.bfloat16)

    def forward():
        with torch.no_grad(), autocast():
            model.token_logits(tokens, labels.to(device))

    def decode():
        with torch.no_grad(), autocast():
            model.tokenizer.decode(tokens.reshape(n, h, w))

    t_forward = seconds_per_call(forward, device, warmup, timed)
    t_decode = seconds_per_call(decode, device, warmup, timed)
    rows = []
    for steps in (8, 12):
        sampler = MaskedTokenSampler(steps=steps)

        def sample():
            with autocast():
                generate(model, n, labels=labels, sampler=sampler)

        t_sample = seconds_per_call(sample, device, 1, max(1, timed // 2))
        ideal = n / (steps * t_forward + t_decode)
        rows.append({"check": f"MaskGIT-256 sample, {steps} steps (random weights)", "images_per_s": n / t_sample,
                     "reference": f"ideal: {steps} forwards + 1 decode", "reference_images_per_s": ideal,
                     "ratio": n / t_sample / ideal})
    return rows


# ------------------------------------------------------------------ 3. data pipeline
def write_jpeg(path: str, seed: int) -> None:
    """A 500x375 JPEG of smooth random colour blobs plus grain (compresses like a photograph)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize((500, 375), Image.BICUBIC)
    pixels = np.asarray(coarse, dtype=np.int16) + rng.normal(0, 10, (375, 500, 3)).astype(np.int16)
    Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(path, quality=90)


def make_jpeg_folder(root: Path, distinct: int, total: int, workers: int) -> None:
    """`distinct` generated JPEGs, hard-linked into `total` files under root/images/."""
    folder = root / "images"
    folder.mkdir()
    sources = [str(root / f"src{i}.jpg") for i in range(distinct)]
    with ProcessPoolExecutor(max_workers=max(1, workers)) as pool:
        list(pool.map(write_jpeg, sources, range(distinct)))
    for i in range(total):
        os.link(sources[i % distinct], folder / f"{i:06d}.jpg")


def data_images_per_s(sizes: Sizes, workers: int) -> tuple[float, float]:
    """(images/s of the loader in steady state, mean JPEG size in kB)."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_jpeg_folder(root, sizes.distinct_jpegs, sizes.epoch_images, workers)
        kb = statistics.mean(os.path.getsize(p) for p in root.glob("src*.jpg")) / 1e3
        cfg = DataConfig(name=str(root / "images"), image_size=sizes.data_size, num_workers=workers)
        dataset = build_dataset(cfg, channels=3, training=True)
        loader = make_loader(dataset, sizes.data_batch, num_workers=workers)
        batches = sizes.epoch_images // sizes.data_batch
        skip = max(1, min(workers, batches // 4))  # the workers' start: their first batches come at once
        for _ in range(skip):
            next(loader)
        start = time.perf_counter()
        images = sum(len(next(loader)["images"]) for _ in range(batches - skip))  # within one epoch
        rate = images / (time.perf_counter() - start)
        del loader  # its workers stop before their files are removed
        return rate, kb


def data_row(sizes: Sizes, workers: int, mae: list[dict]) -> dict:
    rate, kb = data_images_per_s(sizes, workers)
    timed = [r for r in mae if "images_per_s" in r]
    best = max(timed, key=lambda r: r["images_per_s"])
    ratio = rate / best["images_per_s"]
    return {"check": f"data: image folder, {workers} workers, 500x375 JPEG ({kb:.0f} kB) -> {sizes.data_size} px crop",
            "images_per_s": rate, "reference": f"mimkit {best['check']}",
            "reference_images_per_s": best["images_per_s"], "ratio": ratio,
            "verdict": "the data keeps up" if ratio >= 1 else "the data does NOT keep up"}


# ------------------------------------------------------------------ report
def number(value, percent: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value * 100:.3g}%" if percent else f"{value:.4g}"


def print_table(rows: list[dict]) -> None:
    header = f"{'check':<66} | {'img/s':>9} | {'ref img/s':>9} | {'ratio':>6} | {'MFU':>7} | {'ref MFU':>7} | reference"
    print(header)
    print("-" * len(header))
    for r in rows:
        if "skipped" in r:
            print(f"{r['check']:<66} | skipped: {r['skipped']}")
            continue
        print(f"{r['check']:<66} | {number(r['images_per_s']):>9} | {number(r['reference_images_per_s']):>9} | "
              f"{number(r['ratio']):>6} | {number(r.get('mfu'), True):>7} | {number(r.get('reference_mfu'), True):>7} | "
              f"{r['reference']}" + (f" -> {r['verdict']}" if "verdict" in r else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="every path on the CPU with tiny sizes")
    parser.add_argument("--out", default=None, help="write the results as JSON to this file")
    parser.add_argument("--peak-tflops", type=float, default=989.0,
                        help="the accelerator's peak for MFU (default: H100 SXM bf16 dense)")
    parser.add_argument("--workers", type=int, default=None, help="data workers (default 16; 2 with --smoke)")
    parser.add_argument("--batch", type=int, default=None, help="MAE training batch (default 256)")
    parser.add_argument("--compile-backend", default=None, help="default inductor (aot_eager with --smoke)")
    parser.add_argument("--no-compile", action="store_true", help="leave out the compiled MAE row")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: as set; 1 with --smoke, whose tiny ops only wait "
                             "for each other on a shared machine)")
    args = parser.parse_args()
    if args.threads or args.smoke:
        torch.set_num_threads(args.threads or 1)

    sizes = SMOKE if args.smoke else GPU
    if args.batch:
        sizes.mae.batch = args.batch
    workers = args.workers or (2 if args.smoke else 16)
    backend = args.compile_backend or ("aot_eager" if args.smoke else "inductor")
    if args.smoke:
        device = torch.device("cpu")
    elif torch.cuda.is_available():
        device = torch.device("cuda")
    else:
        parser.error("no CUDA device: run on a GPU machine, or --smoke for the CPU check of every path")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"gpu_check{' --smoke' if args.smoke else ''}: {name}, torch {torch.__version__}, "
          f"{os.cpu_count()} CPU cores, load average {load_average()}", flush=True)
    print(f"MFU against {args.peak_tflops:g} TFLOP/s; {model_flops(sizes.mae) / sizes.mae.batch / 1e9:.3g} "
          f"GFLOP per trained image (3 x forward matmuls, encoder on the visible 25%, decoder on all tokens)"
          + ("; on a CPU the MFU column means nothing" if device.type == "cpu" else ""), flush=True)

    start, elapsed = time.perf_counter(), {}

    def done(part: str) -> None:
        elapsed[part] = time.perf_counter() - start
        print(f"[{elapsed[part]:.0f} s] {part} done", flush=True)

    rows = mae_rows(sizes, device, backend, args.peak_tflops * 1e12, not args.no_compile)
    done("MAE")
    rows += maskgit_rows(sizes, device)
    free(device)  # the MaskGIT model is gone with maskgit_rows' frame
    done("MaskGIT")
    rows.append(data_row(sizes, workers, rows))
    done("data")
    print(f"load average {load_average()}\n", flush=True)
    print_table(rows)
    print("\nMaskGIT has random weights (speed as trained, pictures noise); bf16 autocast and fused AdamW throughout.")
    if args.out:
        report = {"device": name, "torch": torch.__version__, "smoke": args.smoke, "peak_tflops": args.peak_tflops,
                  "compile_backend": backend, "flops_per_image": model_flops(sizes.mae) / sizes.mae.batch,
                  "mae_batch": sizes.mae.batch, "workers": workers, "elapsed_s_at_end_of": elapsed, "rows": rows}
        Path(args.out).write_text(json.dumps(report, indent=1))
    bad = [r["check"] for r in rows if "skipped" not in r
           and not all(math.isfinite(r[k]) and r[k] > 0 for k in ("images_per_s", "reference_images_per_s"))]
    if bad:
        raise SystemExit(f"non-finite or zero results: {bad}")


if __name__ == "__main__":
    main()
