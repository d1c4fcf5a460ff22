"""The README and docs/: every relative link leads somewhere, and the flag table is current.

A link to another page must name a file of the checkout; a link with ``#anchor`` must name a
heading of its page, as GitHub spells heading anchors. The table of flags in docs/running.md is
what ``tools/flags_table.py`` makes from ``lite_serving.process.config.SETTINGS``.
"""

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.M | re.S)
CODE = re.compile(r"`[^`\n]*`")


def anchors(page):
    """The anchors GitHub gives the headings of ``page``: lower case, punctuation dropped,
    spaces as hyphens, ``-1``, ``-2``... after repeats."""
    seen = {}
    found = set()
    for line in FENCE.sub("", page.read_text(encoding="utf-8")).splitlines():
        m = re.match(r"#{1,6} +(.*?) *#* *$", line)
        if not m:
            continue
        slug = re.sub(r"[^\w\- ]", "", m.group(1).lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def links(page):
    """``(target, line number)`` of every link outside code."""
    text = page.read_text(encoding="utf-8")
    text = FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)
    for number, line in enumerate(text.splitlines(), 1):
        for m in LINK.finditer(CODE.sub("", line)):
            yield m.group(1), number


def broken_links(page):
    broken = []
    for target, number in links(page):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):   # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{page.name}:{number}: {target} (no file {dest})")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{page.name}:{number}: {target} (no heading #{anchor} in {dest.name})")
    return broken


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_lead_somewhere(page):
    assert broken_links(page) == []


def test_the_link_check_sees_a_broken_anchor_and_a_missing_file(tmp_path):
    (tmp_path / "a.md").write_text("# Title: `one` & two\n\n## Again\n## Again\n")
    page = tmp_path / "b.md"
    page.write_text("[ok](a.md#title-one--two) [ok](a.md#again-1) [ok](#here)\n\n# Here\n"
                    "[bad](a.md#nothing) [bad](c.md) `[in code](c.md)`\n"
                    "```\n[in a fence](c.md)\n```\n[web](https://example.com/x)\n")
    assert [line.split(" (")[0] for line in broken_links(page)] == [
        "b.md:4: a.md#nothing", "b.md:4: c.md"]


def test_the_readme_gives_the_commands_ci_runs():
    """The README's test command is the one ``.ci/run`` runs, after the same fresh environment."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    ci_command = (ROOT / ".ci" / "run").read_text(encoding="utf-8").strip().splitlines()[-1]
    assert ci_command == "pip install '.[test]' && pytest && LITE_SERVING_PURE=1 pytest -m \"not slow\""
    assert "python3 -m venv .venv && . .venv/bin/activate && " + ci_command in readme
    assert ("python3 -m venv .venv && . .venv/bin/activate && pip install '.[onnx]' && "
            "lite-serving examples/iris --port 8080") in readme


def flags_table():
    spec = importlib.util.spec_from_file_location("flags_table", ROOT / "tools" / "flags_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_flag_table_in_running_md_is_made_from_the_settings():
    tool = flags_table()
    _before, table, _after = tool.split_page(tool.PAGE.read_text(encoding="utf-8"))
    assert table == tool.section(), (
        "docs/running.md's flag table is not what lite_serving/process/config.py says: run "
        "python tools/flags_table.py --write")


def test_the_flag_table_has_a_row_for_every_setting_with_its_variable_and_default():
    from lite_serving.process.config import SETTINGS
    rows = flags_table().current_table().splitlines()[2:]
    assert len(rows) == len(SETTINGS)
    by_flag = {row.split(" | ")[0].split("`")[1]: row for row in rows}
    assert by_flag["--max-body-size"] == (
        "| `--max-body-size` | `LITE_SERVING_MAX_BODY_SIZE` | `104857600` (100 MiB) | "
        "largest request body in bytes (413 above it) |")
    assert by_flag["--dev"].startswith("| `--dev` / `--no-dev` | `LITE_SERVING_DEV` | off |")
    assert by_flag["--api-key"].startswith(
        "| `--api-key` (repeatable) | `LITE_SERVING_API_KEYS` (comma-separated) | none: no key")
    assert "| `5` |" in by_flag["--keep-alive-timeout"]
