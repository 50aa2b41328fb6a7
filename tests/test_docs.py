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


ROOT = DOCS.parent
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def user_pages() -> list[Path]:
    return [ROOT / "README.md", *sorted(DOCS.rglob("*.md")), ROOT / "benchmarks" / "LOG.md"]


def test_readme_fits_a_first_read():
    readme = (ROOT / "README.md").read_text()
    assert len(readme) <= 8000, len(readme)
    for part in ("## Install", "download.pytorch.org/whl/cpu", "comatch train\n", "--labeled", "--preset",
                 "## Results", "## License", "## Citation", "pages     = {9475--9484}"):
        assert part in readme, part
    assert "No paper preset has been run on its real dataset here" in readme
    assert (ROOT / "LICENSE").read_text().startswith("MIT License\n\nCopyright (c) 2026 the comatch authors")


def test_every_local_link_resolves():
    broken = []
    for page in user_pages():
        for target in LINK.findall(page.read_text()):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            if not (page.parent / target.split("#")[0]).exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert broken == []


def test_the_default_run_is_described_alike_everywhere(capsys):
    from comatch import config as cfg
    from comatch.cli import build_parser

    said = "1 to 2 minutes"
    assert said in cfg.load_preset("digits")["description"]
    assert said in build_parser().format_help()
    readme, quickstart = (ROOT / "README.md").read_text(), (DOCS / "quickstart.md").read_text()
    assert "1-2 minutes on a 2-core machine" in readme and "one to two minutes on 2 cores" in quickstart
    assert "98.1 ± 0.4%\nover three seeds" in readme
    for page in (readme, quickstart):  # a figure a user meets on their machine comes with its spread
        assert not re.search(r"\b9\d\.\d\d% (EMA )?test accuracy", page)
        assert "in every run" not in page


def test_the_performance_page_is_for_users_and_the_log_is_kept():
    page = (DOCS / "performance.md").read_text()
    assert len(page) < 12000 and "benchmarks/LOG.md" in page
    assert not re.search(r"\d\d:\d\d UTC|\bon \d+ December\b", page)  # no dated log entries
    figures = page[page.index("## Current figures"):page.index("## GPUs")]
    rows = [r for r in figures.splitlines() if r.startswith("| ") and not r.startswith("| what") and "---" not in r]
    assert rows and all(r.rstrip().endswith("` |") for r in rows)  # each figure with its command
    assert "## Side by side with the released network" in (ROOT / "benchmarks" / "LOG.md").read_text()
