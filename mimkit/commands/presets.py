"""`mimkit presets`: list the named presets (model, data, steps and what each is for);
`mimkit presets --markdown` prints the table of docs/presets.md from the same rows."""
import textwrap
from dataclasses import dataclass

WIDTH = 100  # columns of the text listing
INDENT = "    "


@dataclass(frozen=True)
class PresetRow:
    """What the listing shows of one preset."""

    name: str
    method: str
    model: str
    data: str
    steps: int
    description: str


# ------------------------------------------------------------------ model summaries
def side_pair(img_size) -> tuple[int, int]:
    """img_size as (height, width): 224 -> (224, 224)."""
    return tuple(img_size) if isinstance(img_size, (tuple, list)) else (img_size, img_size)


def pixels(img_size) -> str:
    """224 -> "224px"; (28, 32) -> "28x32px"."""
    h, w = side_pair(img_size)
    return f"{h}px" if h == w else f"{h}x{w}px"


def token_grid(img_size, stride: int) -> str:
    """The token grid of img_size images at `stride` pixels per token: 224, 16 -> "14x14"."""
    h, w = side_pair(img_size)
    return f"{h // stride}x{w // stride}"


def vit(m) -> str:
    """A ViT encoder: image side, patch, width x depth."""
    return f"{pixels(m.img_size)} patch {m.patch_size}, {m.embed_dim}x{m.depth}"


def tokenizer(m) -> str:
    """The frozen tokenizer a model needs (model.tokenizer), or a reminder to give one."""
    return f"tokenizer {m.tokenizer}" if m.tokenizer else "tokenizer: set model.tokenizer"


def mae_model(m) -> str:
    """MAE: its ViT encoder and decoder."""
    return f"{vit(m)}, decoder {m.decoder_embed_dim}x{m.decoder_depth}"


def beitv2_model(m) -> str:
    """BEiT v2: its ViT and the VQ-KD tokenizer whose codes it predicts."""
    return f"{vit(m)}, {tokenizer(m)}"


def revcolv2_model(m) -> str:
    """RevColV2: image, patch, the shared width, levels and columns (it has no single depth)."""
    return (f"{pixels(m.img_size)} patch {m.patch_size}, {m.embed_dim}-d, {m.n_levels} levels x {m.level_depth} "
            f"block, {m.encoder_columns} + {m.decoder_columns} columns")


def vqkd_model(m) -> str:
    """VQ-KD: its ViT encoder, token grid and codebook."""
    return f"{vit(m)} -> {token_grid(m.img_size, m.patch_size)} tokens, {m.codebook_size} codes"


def vqgan_model(m) -> str:
    """VQGAN: image side, downsampling factor f, token grid and codebook."""
    f = 2 ** (len(m.channel_mult) - 1)
    return f"{pixels(m.img_size)} f{f} -> {token_grid(m.img_size, f)} tokens, {m.codebook_size} codes"


def maskgit_model(m) -> str:
    """MaskGIT: its transformer and the tokenizer it models (no image size of its own)."""
    return f"{m.embed_dim}x{m.depth}, {tokenizer(m)}"


def mage_model(m) -> str:
    """MAGE: encoder, decoder and the tokenizer it models (no image size of its own)."""
    return f"{m.embed_dim}x{m.depth}, decoder {m.decoder_embed_dim}x{m.decoder_depth}, {tokenizer(m)}"


def classifier_model(m) -> str:
    """Classifier: image side, stage widths and classes."""
    return f"{pixels(m.img_size)} conv {'-'.join(map(str, m.widths))}, {m.num_classes} classes"


# method -> one line about its typed model config (width x depth = embed_dim x blocks)
MODEL_SUMMARIES = {"mae": mae_model, "beitv2": beitv2_model, "revcolv2": revcolv2_model, "vqkd": vqkd_model,
                   "vqgan": vqgan_model, "maskgit_vqgan": vqgan_model, "maskgit": maskgit_model, "mage": mage_model,
                   "classifier": classifier_model}


def describe_model(method: str, model_config) -> str:
    """One line about a preset's model: ViT methods: size, patch, width x depth; tokenizers: size,
    downsampling or patch, token grid, codebook; token models: width x depth and their tokenizer."""
    summary = MODEL_SUMMARIES.get(method)
    return summary(model_config) if summary else "-"


# ------------------------------------------------------------------ rows and their renderings
def preset_rows() -> list[PresetRow]:
    """One row per preset, in registry order (each method's paper recipes, then its CPU runs), read
    from the checked config so that fields a preset leaves out show their defaults."""
    from ..config import run_config_from_dict
    from ..presets import all_presets, preset_descriptions, preset_dict

    descriptions = preset_descriptions()
    rows = []
    for name in all_presets():
        config = run_config_from_dict(preset_dict(name))
        rows.append(PresetRow(name, config.method, describe_model(config.method, config.model), config.data.name,
                              config.train.steps, descriptions.get(name, "")))
    return rows


def text_listing(rows: list[PresetRow]) -> str:
    """Two or more lines per preset: name, method and model aligned; then, indented and wrapped at
    WIDTH columns, data, steps and the description."""
    name_width = max(len(row.name) for row in rows)
    method_width = max(len(row.method) for row in rows)
    lines = [f"{'preset':<{name_width}}  {'method':<{method_width}}  model",
             f"{INDENT}data, steps: what it is for", ""]
    for row in rows:
        lines.append(f"{row.name:<{name_width}}  {row.method:<{method_width}}  {row.model}")
        detail = ": ".join(filter(None, [f"{row.data}, {row.steps:,} steps", row.description]))
        lines += textwrap.wrap(detail, WIDTH, initial_indent=INDENT, subsequent_indent=INDENT,
                               break_on_hyphens=False)
    return "\n".join(lines)


def markdown_table(rows: list[PresetRow]) -> str:
    """The README's Presets table: one row per preset with its method, model and description."""
    lines = ["| preset | method | model | what it is for |", "|---|---|---|---|"]
    lines += [f"| `{row.name}` | {row.method} | {row.model} | {row.description} |" for row in rows]
    return "\n".join(lines)


def run(args) -> None:
    rows = preset_rows()
    print(markdown_table(rows) if args.markdown else text_listing(rows))


def register(sub) -> None:
    p = sub.add_parser("presets", help="list the named presets",
                       description="List every preset: method, model, data, steps and what it is for.")
    p.add_argument("--markdown", action="store_true", help="print the table of docs/presets.md (markdown) instead")
    p.set_defaults(func=run)
