"""Presets: every one has a one-line description, `mimkit presets` shows them all with a correct
model summary, and the Presets table of docs/presets.md is exactly `mimkit presets --markdown`."""
from pathlib import Path

import pytest

from mimkit.cli import main
from mimkit.commands.presets import WIDTH, describe_model, markdown_table, pixels, preset_rows, token_grid
from mimkit.config import run_config_from_dict
from mimkit.presets import all_presets, preset_descriptions, preset_dict

PRESETS_PAGE = Path(__file__).resolve().parents[1] / "docs" / "presets.md"


def words(text: str) -> str:
    """Text with every run of whitespace as one space (the listing wraps descriptions)."""
    return " ".join(text.split())


def presets_page_table() -> list[str]:
    """The table lines of docs/presets.md's "# Presets" section (the page's first)."""
    section = ("\n" + PRESETS_PAGE.read_text()).split("\n# Presets\n", 1)[1].split("\n#", 1)[0]
    return [line for line in section.splitlines() if line.startswith("|")]


def test_every_preset_has_a_one_line_description():
    presets, descriptions = all_presets(), preset_descriptions()
    assert sorted(set(presets) - set(descriptions)) == [], "presets without a description (add it to DESCRIPTIONS)"
    assert sorted(set(descriptions) - set(presets)) == [], "descriptions of presets that do not exist"
    for name, text in descriptions.items():
        assert isinstance(text, str) and text.strip() == text and text, name
        assert "\n" not in text and "|" not in text, f"{name}: one line, no table separator"


@pytest.mark.parametrize("name", sorted(all_presets()))
def test_preset_dict_is_a_valid_run_config(name):
    tree = preset_dict(name)
    assert set(tree) <= {"method", "model", "data", "optim", "train"}
    assert run_config_from_dict(tree).method == tree["method"]


def test_presets_command_lists_every_preset_with_its_description(capsys):
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    assert "None" not in out
    assert max(len(line) for line in out.splitlines()) <= WIDTH
    starts = {line.split()[0] for line in out.splitlines() if line and not line.startswith(" ")}
    assert set(all_presets()) <= starts
    for name, text in preset_descriptions().items():
        assert words(text) in words(out), name


def test_model_summaries_fit_every_kind_of_model():
    rows = {row.name: row for row in preset_rows()}
    assert rows["mae_vit_base_patch16"].model == "224px patch 16, 768x12, decoder 512x8"
    assert rows["vqgan_fmnist"].model == "32px f4 -> 8x8 tokens, 512 codes"
    assert rows["vqkd_fmnist"].model == "28px patch 4, 128x4 -> 7x7 tokens, 512 codes"
    assert rows["maskgit_fmnist"].model == "192x4, tokenizer runs/vq_fmnist"
    assert rows["mage_vit_base_imagenet_256"].model == "768x12, decoder 768x8, tokenizer runs/maskgit_vqgan"
    assert rows["mage_vit_large_imagenet_256"].model.startswith("1024x24, decoder 1024x8")  # models_mage.py
    assert rows["beitv2_vit_base_patch16"].model.endswith("tokenizer: set model.tokenizer")
    assert rows["revcolv2_fmnist"].model == "28px patch 4, 128-d, 4 levels x 1 block, 2 + 2 columns"
    assert rows["classifier_fmnist"].model == "28px conv 24-48-96-192, 10 classes"
    assert pixels((28, 32)) == "28x32px" and token_grid((28, 32), 4) == "7x8"
    assert describe_model("unknown", object()) == "-"


def test_presets_page_table_is_the_generated_one(capsys):
    table = presets_page_table()
    rows = [[cell.strip() for cell in line.strip("|").split(" | ")] for line in table[2:]]
    descriptions = preset_descriptions()
    assert [(row[0].strip("`"), row[-1]) for row in rows] == [(name, descriptions[name]) for name in all_presets()]
    assert main(["presets", "--markdown"]) == 0
    generated = capsys.readouterr().out.splitlines()
    assert generated == markdown_table(preset_rows()).splitlines()
    assert table == generated, "docs/presets.md's table is stale: paste `mimkit presets --markdown` into it"
