"""The extension tutorial (docs/extending.md) runs: its python blocks, in order, in one namespace."""

import re
from pathlib import Path

PAGE = Path(__file__).resolve().parents[1] / "docs" / "extending.md"


def test_every_code_block_of_the_extending_page_runs():
    blocks = re.findall(r"```python\n(.*?)```", PAGE.read_text(), flags=re.S)
    assert len(blocks) >= 6  # sampler, algorithm, oracle, policy class, instance, sweep
    namespace: dict = {"__name__": "docs_extending"}
    for block in blocks:
        exec(compile(block, str(PAGE), "exec"), namespace)
