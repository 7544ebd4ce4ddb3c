"""`mimkit presets`: list the named presets."""


def run(args) -> None:
    from ..presets import all_presets

    table = all_presets()
    width = max(len(name) for name in table)
    for name in sorted(table):
        p = table[name]
        m, t = p.get("model", {}), p.get("train", {})
        print(f"{name:<{width}}  {p['method']:<6} {m.get('img_size')}px patch {m.get('patch_size')} "
              f"dim {m.get('embed_dim')} x{m.get('depth')}  data={p.get('data', {}).get('name')}  steps={t.get('steps')}")


def register(sub) -> None:
    p = sub.add_parser("presets", help="list the named presets")
    p.set_defaults(func=run)
