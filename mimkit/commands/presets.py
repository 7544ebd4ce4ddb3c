"""`mimkit presets`: list the named presets."""


def describe_model(method: str, m: dict) -> str:
    """One line about a preset's model section (ViT methods: size, patch, width x depth; tokenizers:
    size, downsampling, token grid, codebook)."""
    if "channel_mult" in m:  # convolutional tokenizer
        f = 2 ** (len(m["channel_mult"]) - 1)
        side = m.get("img_size", 0) // f
        return f"{m.get('img_size')}px f{f} -> {side}x{side} tokens, {m.get('codebook_size')} codes"
    return f"{m.get('img_size')}px patch {m.get('patch_size')} dim {m.get('embed_dim')} x{m.get('depth')}"


def run(args) -> None:
    from ..presets import all_presets

    table = all_presets()
    width = max(len(name) for name in table)
    for name in sorted(table):
        p = table[name]
        m, t = p.get("model", {}), p.get("train", {})
        print(f"{name:<{width}}  {p['method']:<6} {describe_model(p['method'], m)}  "
              f"data={p.get('data', {}).get('name')}  steps={t.get('steps')}")


def register(sub) -> None:
    p = sub.add_parser("presets", help="list the named presets")
    p.set_defaults(func=run)
