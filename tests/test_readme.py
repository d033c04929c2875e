"""The README's offline Python examples run exactly as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
OFFLINE_SECTIONS = ["## Models", "## timm"]  # "Pretrained weights" needs the network


def _python_blocks(section: str) -> list[str]:
    text = README.read_text()
    start = text.index(section)
    end = text.find("\n## ", start + len(section))
    return re.findall(r"```python\n(.*?)```", text[start : end if end >= 0 else None], flags=re.S)


@pytest.mark.parametrize("section", OFFLINE_SECTIONS)
def test_readme_examples_run(section: str) -> None:
    blocks = _python_blocks(section)
    assert blocks, f"no python example under {section}"
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, f"README.md {section}", "exec"), namespace)
