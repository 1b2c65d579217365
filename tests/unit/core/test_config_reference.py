"""The README's key table is the config models' own text: every key of every section, its default and description."""

from pathlib import Path

from pydantic import Field, create_model

from kagglecv.core import config_reference
from kagglecv.core.config import Config

README = Path(__file__).resolve().parents[3] / "README.md"


def test_the_readme_lists_every_key_as_the_models_define_it():
    block = config_reference.readme_block(README.read_text(encoding="utf-8"))
    assert block == config_reference.config_reference(), \
        "regenerate: python -c 'from kagglecv.core.config_reference import config_reference; print(config_reference())'"
    for section in ("augment", "train", "submit"):
        model = Config.model_fields[section].annotation
        for key in model.model_fields:
            assert f"`{section}.{key}`" in block, key
    assert "`train.lr` (timm)" in block and "`augment.batch`" in block and "`submit.top_k`" in block


def test_a_key_added_to_a_model_changes_the_reference(monkeypatch):
    before = config_reference.config_reference()
    extended = create_model("Extended", __base__=Config, extra_key=(int, Field(3, description="A new key.")))
    monkeypatch.setattr(config_reference, "Config", extended)
    after = config_reference.config_reference()
    assert after != before and "| `extra_key` | `3` | A new key. |" in after
