"""The Markdown table of every flag, made from ``lite_serving.process.config.SETTINGS``.

    python tools/flags_table.py           # print the table
    python tools/flags_table.py --write   # put it into docs/running.md, between its markers

The table in docs/running.md is this script's output (``tests/project/test_docs.py`` fails when it is
not): change a setting's flag, default or help in config.py, then run ``--write``. The server
never imports this file.
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "running.md"
BEGIN = ("<!-- flags table: made by `python tools/flags_table.py --write` from "
         "lite_serving/process/config.py; do not edit by hand -->")
END = "<!-- end of the flags table -->"
MIB = 1024 * 1024
GIB = 1024 * MIB


def default_text(setting):
    """A setting's default as a reader wants it: its own words when it has them, on/off for a
    boolean, sizes in MiB beside the bytes, whole seconds without ``.0``."""
    if setting.default_text is not None:
        return cell(setting.default_text)
    value = setting.default
    if setting.kind is bool:
        return "on" if value else "off"
    if setting.kind is str:
        return f"`{value}`" if value else "none"
    if setting.kind is float and value == int(value):
        value = int(value)
    if setting.kind is int and value >= MIB and value % MIB == 0:
        size = f"{value // GIB} GiB" if value % GIB == 0 else f"{value // MIB} MiB"
        return f"`{value}` ({size})"
    return f"`{value}`"


def cell(text):
    """Text for a table cell: a ``|`` would end the cell, a ``*`` might start emphasis."""
    return text.replace("|", "\\|").replace("*", "\\*")


def table(settings):
    rows = ["| flag | environment variable | default | meaning |",
            "| --- | --- | --- | --- |"]
    for s in settings:
        flag = f"`{s.flag}`"
        if s.kind is bool:
            flag += f" / `--no-{s.flag[2:]}`"
        elif s.many:
            flag += " (repeatable)"
        env = f"`{s.env}`" + (" (comma-separated)" if s.many else "")
        rows.append(f"| {flag} | {env} | {default_text(s)} | {cell(s.help)} |")
    return "\n".join(rows) + "\n"


def current_table():
    """The table as config.py makes it now."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from lite_serving.process.config import SETTINGS
    return table(SETTINGS)


def section():
    """What goes between the markers: the table, a blank line either side."""
    return "\n" + current_table() + "\n"


def split_page(text):
    """``(before, table, after)`` of docs/running.md's text; ValueError without the markers."""
    start = text.index(BEGIN) + len(BEGIN) + 1
    stop = text.index(END, start)
    return text[:start], text[start:stop], text[stop:]


def main(argv):
    if argv == ["--write"]:
        before, _old, after = split_page(PAGE.read_text(encoding="utf-8"))
        PAGE.write_text(before + section() + after, encoding="utf-8")
    elif not argv:
        sys.stdout.write(current_table())
    else:
        sys.exit("usage: python tools/flags_table.py [--write]")


if __name__ == "__main__":
    main(sys.argv[1:])
