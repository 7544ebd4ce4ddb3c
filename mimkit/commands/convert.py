"""`mimkit convert --list` / `mimkit convert NAME IN OUT.safetensors [--export]`: the converter table
(mimkit.hub.converters) and applying one of its rows to a checkpoint file."""


def run(args) -> None:
    from ..errors import ConfigError
    from ..hub.converters import format_table, get_converter
    from ..files.state_dicts import load_state_dict_file, save_state_dict_file

    if args.list or not args.name:
        print(format_table())
        return
    if not (args.input and args.output):
        raise ConfigError("give the input checkpoint and the output .safetensors: "
                          f"mimkit convert {args.name} IN OUT.safetensors [--export]")
    converter = get_converter(args.name)
    fn = converter.export_fn if args.export else converter.import_fn
    if fn is None:
        direction = "export" if args.export else "import"
        raise ConfigError(f"converter {args.name} has no {direction} direction (see `mimkit convert --list`)")
    converted = fn(load_state_dict_file(args.input))
    save_state_dict_file(converted, args.output, metadata={"format": "pt", "converter": args.name})
    print(f"{len(converted)} tensors written to {args.output} ({args.name}, "
          f"{'mimkit -> ' + converter.foreign if args.export else converter.foreign + ' -> mimkit'})")


def register(sub) -> None:
    p = sub.add_parser("convert", help="convert checkpoints between mimkit and other projects' key names",
                       description="List the converter table (--list) or convert a checkpoint file with one "
                                   "row of it: official -> mimkit by default, mimkit -> official with --export.")
    p.add_argument("name", nargs="?", help="converter name (see --list)")
    p.add_argument("input", nargs="?", help="input checkpoint (.pth/.pt/.bin/.ckpt/.safetensors)")
    p.add_argument("output", nargs="?", help="output .safetensors file")
    p.add_argument("--list", action="store_true", help="print the converter table")
    p.add_argument("--export", action="store_true", help="mimkit -> the other format")
    p.set_defaults(func=run)
