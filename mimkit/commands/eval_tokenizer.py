"""`mimkit eval tokenizer CKPT [--data NAME]`: reconstruction PSNR and codebook usage of a tokenizer
on the test split (reached through `mimkit eval`, whose parser lists `tokenizer` as a protocol)."""
from .checkpoint_data import load_eval_data


def run(args) -> None:
    import torch

    from ..engine.checkpoint import load_model
    from ..errors import MimkitError
    from ..eval import evaluate_tokenizer

    model, config = load_model(args.checkpoint)
    if not all(hasattr(model, name) for name in ("encode", "decode", "codebook_size")):
        raise MimkitError(f"{args.checkpoint} is a {config.method} checkpoint, not an image tokenizer with "
                          f"encode/decode (e.g. vqgan); use `mimkit eval linear|knn|probes` for encoders")
    torch.manual_seed(args.seed)
    data = load_eval_data(args, config, args.split)
    report = evaluate_tokenizer(model, data, batch_size=args.batch_size, progress=True)
    print(f"tokenizer    {config.method} ({args.checkpoint}), {args.split} split of "
          f"{args.data or config.data.name}")
    print(report.format())
