"""The README and docs/: every relative link leads somewhere.

A link to another page must name a file of the checkout; a link with ``#anchor`` must name a
heading of its page, as GitHub spells heading anchors.
"""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
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
    assert ci_command == "pip install '.[test]' && pytest"
    assert "python3 -m venv .venv && . .venv/bin/activate && " + ci_command in readme
    assert ("python3 -m venv .venv && . .venv/bin/activate && pip install '.[onnx]' && "
            "lite-serving examples/iris --port 8080") in readme
