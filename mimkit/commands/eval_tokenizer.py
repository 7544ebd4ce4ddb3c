"""`mimkit eval tokenizer CKPT [--data NAME]`: reconstruction PSNR (VQGAN) or teacher cosine (VQ-KD,
when its model.teacher can be loaded) and codebook usage of a tokenizer on the test split (reached
through `mimkit eval`, whose parser lists `tokenizer` as a protocol)."""
from .checkpoint_data import load_eval_data, report_skipped


def run(args) -> None:
    import torch

    from ..data.summary import describe_dataset
    from ..registry import load_model
    from ..errors import MimkitError
    from ..eval import evaluate_tokenizer
    from ..teacher_loading import attach_teacher_if_available

    model, config = load_model(args.checkpoint)
    if not model.is_tokenizer:
        raise MimkitError(f"{args.checkpoint} is a {config.method} checkpoint, not an image tokenizer with "
                          f"encode (e.g. vqgan, vqkd); use `mimkit eval linear|knn|probes` for encoders")
    note = attach_teacher_if_available(model, config)
    torch.manual_seed(args.seed)
    data = load_eval_data(args, config, args.split)
    print(f"{args.split} data   {describe_dataset(data, args.seed)}", flush=True)
    report = evaluate_tokenizer(model, data, batch_size=args.batch_size, progress=True)
    print(f"tokenizer    {config.method} ({args.checkpoint})")
    print(report.format())
    report_skipped(data)
    if note:
        print(note)

