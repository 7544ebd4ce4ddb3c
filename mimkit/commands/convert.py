"""`mimkit convert --list` / `mimkit convert NAME IN OUT [--set FIELD=VALUE] [--overwrite]` /
`mimkit convert NAME IN OUT --export`: the converter table (mimkit.hub.converters) and applying one
of its rows. Importing (other project -> mimkit) writes a model folder with the model's
save_pretrained (config.json with the method and the architecture read from the weights,
model.safetensors, checksums.sha256, README.md), which every command and from_pretrained take;
exporting (mimkit -> other project) writes the other project's .safetensors file."""
from pathlib import Path


def run(args) -> None:
    from ..errors import ConfigError
    from ..hub.converters import format_table, get_converter

    if args.list or not args.name:
        print(format_table())
        return
    converter = get_converter(args.name)
    if not (args.input and args.output):
        target = "OUT.safetensors --export" if converter.import_fn is None else "OUT_FOLDER"
        raise ConfigError(f"give the input checkpoint and the output: mimkit convert {args.name} IN {target}")
    fn = converter.export_fn if args.export else converter.import_fn
    if fn is None:
        direction = "export" if args.export else "import"
        raise ConfigError(f"converter {args.name} has no {direction} direction (see `mimkit convert --list`)")
    out = Path(args.output)
    if not args.export and out.suffix.lower() == ".safetensors":
        raise ConfigError(f"{out}: OUT is a folder now (a model folder: config.json + model.safetensors + "
                          f"checksums.sha256 + README.md); give a folder path without .safetensors")
    if out.exists() and not (out.is_dir() and not any(out.iterdir())) and not args.overwrite:
        raise ConfigError(f"{out} exists and is not empty; pass --overwrite to replace it")
    if args.export:
        export(converter, fn, args, out)
    else:
        import_folder(converter, args, out)


def export(converter, fn, args, out: Path) -> None:
    from ..errors import CheckpointError
    from ..files.state_dicts import load_state_dict_file, save_state_dict_file

    if args.set_fields:
        raise CheckpointError("--set applies to importing (the architecture of the model folder), not to --export")
    if Path(args.input).is_dir():  # a model folder / checkpoint / run folder
        from ..registry import load_model

        model, config = load_model(args.input)
        if config.method != converter.method:
            raise CheckpointError(f"{args.input} holds a {config.method} model; {args.name} exports {converter.method}")
        sd = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    else:
        sd = load_state_dict_file(args.input)
    converted = fn(sd)
    replace(out, lambda tmp: save_state_dict_file(converted, tmp, metadata={"format": "pt", "converter": args.name}))
    print(f"{len(converted)} tensors written to {out} ({args.name}, mimkit -> {converter.foreign})")


def import_folder(converter, args, out: Path) -> None:
    from ..config import parse_override
    from ..files.state_dicts import read_checkpoint

    found = converter.settings(args.input) if converter.settings is not None else {}
    overrides = {**found, **dict(parse_override(text) for text in args.set_fields)}  # --set wins
    if converter.build is None:
        from ..errors import ConfigError
        raise ConfigError(f"converter {args.name} cannot build a model (see `mimkit convert --list`)")
    read = converter.read or read_checkpoint  # a row may read another format (flax msgpack)
    model, report = converter.build(read(args.input), overrides)
    replace(out, model.save_pretrained)
    print(f"{model.method_name} model folder written to {out} ({args.name}: {converter.foreign} -> mimkit; "
          f"{report.summary()})")


def replace(out: Path, write) -> None:
    """write(tmp) beside `out`, then put it in out's place (out, when it exists, goes only then): an
    error while converting or writing leaves `out` as it was."""
    import shutil
    import tempfile

    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        tmp = work / out.name
        write(tmp)
        if out.is_dir():
            old = work / "old"
            out.rename(old)
        elif out.exists():
            out.unlink()
        tmp.rename(out)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def register(sub) -> None:
    p = sub.add_parser("convert", help="convert other projects' checkpoints into mimkit model folders (and back)",
                       description="List the converter table (--list) or convert a checkpoint with one row of it: "
                                   "other project -> a mimkit model folder (save_pretrained: every command and "
                                   "from_pretrained take it) by default, mimkit -> the other project's .safetensors "
                                   "file with --export.")
    p.add_argument("name", nargs="?", help="converter name (see --list)")
    p.add_argument("input", nargs="?", help="input checkpoint (.pth/.pt/.bin/.ckpt/.safetensors; with --export also "
                                            "a mimkit model folder)")
    p.add_argument("output", nargs="?", help="output model folder (import) or .safetensors file (--export)")
    p.add_argument("--list", action="store_true", help="print the converter table")
    p.add_argument("--export", action="store_true", help="mimkit -> the other format")
    p.add_argument("--overwrite", action="store_true", help="replace an output that exists and is not empty")
    p.add_argument("--set", dest="set_fields", action="append", default=[], metavar="FIELD=VALUE",
                   help="a model config field the weights do not fix (num_heads, decoder_num_heads, img_size, ...); "
                        "repeatable")
    p.set_defaults(func=run)
