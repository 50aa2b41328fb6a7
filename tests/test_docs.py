"""The documentation's Python-API example runs as written and learns."""

import re
from pathlib import Path

import torch

DOCS = Path(__file__).resolve().parents[1] / "docs"


def python_blocks(markdown: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", markdown, flags=re.S | re.M)


def test_api_example_runs_and_learns(capsys):
    blocks = [b for b in python_blocks((DOCS / "api.md").read_text()) if "CoMatchCriterion(" in b]
    assert len(blocks) == 1
    namespace: dict = {"__name__": "__docs__"}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: threads only add overhead on a shared CPU
    try:
        exec(compile(blocks[0], str(DOCS / "api.md"), "exec"), namespace)
    finally:
        torch.set_num_threads(threads)
    printed = capsys.readouterr().out
    assert "accuracy on all 1,797 digits" in printed
    assert namespace["accuracy"] > 0.5  # 40 labels; 10 % is chance
    assert 0.0 <= namespace["out"].stats["mask_rate"].item() <= 1.0


def test_index_links_every_page():
    index = (DOCS / "index.md").read_text()
    for page in sorted(DOCS.glob("*.md")):
        if page.name != "index.md":
            assert f"]({page.name})" in index, page.name
