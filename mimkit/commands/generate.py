"""`mimkit generate | inpaint | outpaint | edit CKPT ...`: pictures from a masked token model
(MaskGIT, MAGE).

    mimkit generate CKPT --n 8 [--labels 0,1,... | --per-class 8] --steps 12 --out grid.png
    mimkit inpaint CKPT --data fashion-mnist --n 8 --box x0,y0,x1,y1 --out grid.png
    mimkit outpaint CKPT --data fashion-mnist --side right --amount 0.25 --out grid.png
    mimkit edit CKPT --data fashion-mnist --box x0,y0,x1,y1 --label K --out grid.png

generate tiles the samples row by row (one row per class with --per-class); the image commands
draw one row per test image: masked input | result | original.
"""
import math

from .arguments import non_negative_int, picture_scale, positive_int, seed_int, thread_count
from .checkpoint_data import add_checkpoint_data_args, load_eval_data

# ---------------------------------------------------------------- shared arguments


def add_sampler_args(p) -> None:
    p.add_argument("--steps", type=positive_int, default=12, help="decoding steps T (default 12)")
    p.add_argument("--schedule", default="cosine", help="mask schedule: cosine, linear, square, cubic, sqrt, log, exp")
    p.add_argument("--choice-temperature", type=float, default=4.5,
                   help="Gumbel noise on the confidences (default 4.5)")
    p.add_argument("--token-temperature", type=float, default=1.0, help="temperature of the token distribution")
    p.add_argument("--top-k", type=non_negative_int, default=0, help="sample among the k most likely tokens (0 = all)")
    p.add_argument("--guidance", type=float, default=0.0, help="classifier-free guidance scale w (0 = off)")
    p.add_argument("--guidance-ramp", default="linear", help="linear (w (t+1)/T) or constant")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--scale", type=picture_scale, default=4, help="pixel enlargement factor for small images")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--out", required=True, help="output picture: .png, .jpg, .webp, .bmp or .tif "
                                                "in an existing folder")


def build_sampler(args):
    from ..errors import ConfigError
    from ..generation import MaskedTokenSampler

    try:
        return MaskedTokenSampler(steps=args.steps, schedule=args.schedule, choice_temperature=args.choice_temperature,
                                  token_temperature=args.token_temperature, top_k=args.top_k,
                                  guidance_scale=args.guidance, guidance_ramp=args.guidance_ramp,
                                  progress=not args.no_progress)
    except ValueError as err:  # the sampler's own checks name the bad value
        raise ConfigError(str(err)) from None


def load_token_model(args):
    """(model, RunConfig) of the checkpoint; ConfigError when it is no masked token model."""
    from ..registry import load_model
    from ..errors import ConfigError
    from ..generation import check_token_model

    model, config = load_model(args.checkpoint, device=args.device)
    try:
        check_token_model(model)
    except ConfigError:
        raise ConfigError(f"{args.checkpoint} is a {config.method} model; generate, inpaint, outpaint and edit "
                          f"need a masked token model (maskgit, mage)") from None
    return model, config


def parse_ints(text: str, what: str, count: int | None = None) -> list[int]:
    from ..errors import ConfigError

    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        values = []
    if not values or (count is not None and len(values) != count):
        shape = ",".join(["N"] * count) if count else "comma-separated integers"
        raise ConfigError(f"{what} must be {shape}, got {text!r}")
    return values


def write(args, columns: list, what: str) -> None:
    from ..pictures import image_grid, save_grid

    path = save_grid(image_grid(columns, scale=args.scale), args.out)
    print(f"wrote {path} ({what})")


# ---------------------------------------------------------------- generate


def run_generate(args) -> None:
    import torch

    from ..errors import ConfigError
    from ..generation import generate
    from ..pictures import check_picture_path, tile

    check_picture_path(args.out)  # a bad --out fails before the model loads
    model, _ = load_token_model(args)
    sampler = build_sampler(args)
    labels, n, columns = None, args.n or 8, None
    if args.per_class:
        if model.num_classes == 0:
            raise ConfigError("--per-class needs a class-conditional model; this one is unconditional")
        if args.per_class < 1:
            raise ConfigError(f"--per-class must be >= 1, got {args.per_class}")
        labels = torch.arange(model.num_classes).repeat_interleave(args.per_class)
        n, columns = len(labels), args.per_class
    elif args.labels is not None:
        labels = parse_ints(args.labels, "--labels")
        n = args.n or len(labels)
    generator = torch.Generator(args.device).manual_seed(args.seed)
    images = generate(model, n, labels, sampler, generator, batch_size=args.batch_size or None)
    columns = columns or min(n, math.ceil(math.sqrt(n)))
    write(args, tile(images, columns), f"{n} samples, {sampler.steps} steps")


# ---------------------------------------------------------------- inpaint, outpaint, edit


def draw_images(args, model, config):
    """(images (n, C, H, W) on the model's device, their labels (n,)) drawn with --seed."""
    import torch

    from ..data.evaluation_data import random_readable_items
    from ..errors import ConfigError

    data = load_eval_data(args, config, args.split)
    if args.n < 1:
        raise ConfigError(f"--n must be >= 1, got {args.n}")
    items = random_readable_items(data, args.n, args.seed)
    if "images" not in items[0]:
        raise ConfigError(f"the data {args.data or config.data.name!r} holds tokens, not images (a token cache); "
                          f"pass --data with the images, e.g. --data fashion-mnist")
    images = torch.stack([item["images"] for item in items]).to(args.device)
    labels = torch.stack([torch.as_tensor(item.get("labels", -1)) for item in items]).long()
    return images, labels


def conditioning(args, model, data_labels):
    """--label if given, else the images' own labels (unknown/out of range -> -1) for a
    class-conditional model, None for an unconditional one."""
    if getattr(args, "label", None) is not None:
        return args.label
    if model.num_classes == 0:
        return None
    return data_labels.masked_fill((data_labels < 0) | (data_labels >= model.num_classes), -1)


def greyed(images, mask):
    """images (N, C, H, W) with the True pixels of mask (N, H, W) grey."""
    mask = mask[:, None].to(images.device)
    return images * ~mask + 0.5 * mask


def default_box(size) -> list[int]:
    H, W = size
    return [W // 4, H // 4, W - W // 4, H - H // 4]


def run_image_command(args) -> None:
    import torch

    from ..generation import box_mask, edit, inpaint, outpaint, outpaint_region
    from ..pictures import check_picture_path

    check_picture_path(args.out)  # a bad --out fails before the model loads
    model, config = load_token_model(args)
    sampler = build_sampler(args)
    images, data_labels = draw_images(args, model, config)
    size, n = tuple(images.shape[-2:]), images.shape[0]
    labels = conditioning(args, model, data_labels)
    generator = torch.Generator(args.device).manual_seed(args.seed)
    if args.command == "outpaint":
        amount = parse_amount(args.amount)
        shifted, mask = outpaint_region(images, args.side, amount, tuple(model.grid_size))
        result = outpaint(model, images, args.side, amount, labels, sampler, generator)
        columns, what = [greyed(shifted, mask), result, images], "shifted input | outpainted | original"
    else:
        box = parse_ints(args.box, "--box", 4) if args.box else default_box(size)
        mask = box_mask(box, n, size)
        if args.command == "inpaint":
            result = inpaint(model, images, mask, labels, sampler, generator)
        else:
            result = edit(model, images, box, args.label, sampler, generator)
        columns = [greyed(images, mask), result, images]
        what = f"masked input | {'inpainted' if args.command == 'inpaint' else 'edited'} | original"
    write(args, columns, f"{n} rows: {what}")


def parse_amount(text: str) -> float | int:
    """'0.25' -> a fraction, '3' -> a number of tokens."""
    from ..errors import ConfigError

    try:
        return float(text) if any(c in text for c in ".eE") else int(text)
    except ValueError:
        raise ConfigError(f"--amount must be a fraction such as 0.25 or a number of tokens such as 2, "
                          f"got {text!r}") from None


def register(sub) -> None:
    p = sub.add_parser("generate", help="sample images from a masked token model (MaskGIT, MAGE)",
                       description="Sample images by iterative masked-token decoding and write them as a picture "
                                   "grid (one row per class with --per-class).")
    p.add_argument("checkpoint", help="checkpoint folder, run folder (uses its latest checkpoint) or model.safetensors")
    p.add_argument("--n", type=positive_int, default=None,
                   help="number of samples (default 8, or one per --labels entry)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--labels", help="comma-separated class ids, one per sample or one for all (-1 = no label)")
    group.add_argument("--per-class", type=non_negative_int, default=0,
                       help="this many samples of every class, a row each")
    p.add_argument("--batch-size", type=non_negative_int, default=0, help="samples per sampler call (0 = all at once)")
    p.add_argument("--seed", type=seed_int, default=0)
    p.add_argument("--threads", type=thread_count, default=0, help="torch CPU threads (0 = torch's default)")
    add_sampler_args(p)
    p.set_defaults(func=run_generate)

    helps = {"inpaint": "fill a box of test images: masked input | inpainted | original",
             "outpaint": "extend test images on one side: shifted input | outpainted | original",
             "edit": "regenerate a box of test images under another class: masked input | edited | original"}
    for name, text in helps.items():
        p = sub.add_parser(name, help=text, description=f"{text[0].upper()}{text[1:]} (one row per image).")
        add_checkpoint_data_args(p)
        p.add_argument("--split", default="test", choices=["train", "test"],
                       help="train or test (default test; --test-data names the test images)")
        p.add_argument("--n", type=positive_int, default=8, help="number of images (rows)")
        if name == "outpaint":
            p.add_argument("--side", required=True, help="left, right, top or bottom")
            p.add_argument("--amount", default="0.25", help="fraction of the side (0.25) or tokens (2) to add")
        else:
            p.add_argument("--box", required=name == "edit", default=None,
                           help="x0,y0,x1,y1 in pixels, x1/y1 exclusive" + (" (default: the central half)"
                                                                          if name == "inpaint" else ""))
        if name == "edit":
            p.add_argument("--label", type=int, required=True, help="the class to draw in the box")
        else:
            p.add_argument("--label", type=int, default=None,
                           help="class for a conditional model (default: each image's own label)")
        add_sampler_args(p)
        p.set_defaults(func=run_image_command)
