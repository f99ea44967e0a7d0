"""Shipped config files stay valid against the settings they feed."""

from pathlib import Path

import pytest

from orthoxfer.fit.finetune import FinetuneSettings
from orthoxfer.strategies.settings import AlignSettings, read_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize(
    "section,schema", [("finetune", FinetuneSettings), ("align", AlignSettings), ("fewshot_ft", FinetuneSettings)]
)
def test_paper_config_sections_build_their_settings(section, schema):
    values = read_config(CONFIGS / "paper.toml", section, schema)
    settings = schema(**values)
    assert values and all(getattr(settings, k) == v for k, v in values.items())


def test_paper_config_has_the_papers_numbers():
    align = read_config(CONFIGS / "paper.toml", "align")
    assert (align["alpha"], align["scale"], align["shots"], align["augment"], align["batch_size"]) == (
        1.0,
        1.0,
        100,
        10,
        128,
    )
