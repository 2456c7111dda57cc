"""The documentation keeps up with the repository: its relative links resolve (files and
``#section`` anchors), and every setting and demo-site environment variable is documented.

Plain text parsing only: no database, no server.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

ROOT = Path(__file__).resolve().parent.parent
MARKDOWN_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SETTINGS_PAGE = ROOT / "docs" / "settings.md"
SERVING_PAGE = ROOT / "docs" / "serving.md"
PROJECT_SETTINGS = ROOT / "project" / "settings.py"

# An opening or closing code fence: ``` or ~~~ (three or more), maybe indented (in a list).
_FENCE = re.compile(r"^[ \t]*(`{3,}|~{3,})(.*)$")
# An inline code span: a run of backticks, up to the next run of exactly as many.
_CODE_SPAN = re.compile(r"(?<!`)(`+)(?!`)(.+?)(?<!`)\1(?!`)", re.DOTALL)
# [text](target) or ![alt](target), with an optional "title"; the text may hold one level
# of brackets (an image inside a link) and may run over a line break.
_LINK = re.compile(
    r"""!?\[(?P<text>(?:[^\[\]]|\[[^\[\]]*\])*)\]
    \(\s*(?P<target><[^<>\n]*>|[^\s()<>]*(?:\([^\s()]*\)[^\s()<>]*)*)
    (?:\s+(?:"[^"]*"|'[^']*'|\([^()]*\)))?\s*\)""",
    re.VERBOSE,
)
# A reference definition: [label]: target "title"
_REFERENCE = re.compile(r"^ {0,3}\[[^\]]+\]:[ \t]*(?P<target><[^<>\n]*>|\S+)", re.MULTILINE)
_ATX_HEADING = re.compile(r"^ {0,3}#{1,6}(?:[ \t]+(?P<text>.*?))?(?:[ \t]+#+)?[ \t]*$")
_SETEXT_UNDERLINE = re.compile(r"^ {0,3}(?:=+|-+)[ \t]*$")
_EXTERNAL = re.compile(r"^(?:https?:|mailto:)", re.IGNORECASE)


@dataclass(frozen=True)
class Link:
    path: Path  # the Markdown file the link is in
    line: int
    target: str

    def __str__(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}: {self.target}"


def _blank(text: str) -> str:
    """``text`` with every character but line breaks turned into a space (offsets and
    line numbers stay as they were)."""
    return re.sub(r"[^\n]", " ", text)


def _without_fenced_code(text: str) -> str:
    """Blank out fenced code blocks, fences included; an unclosed fence runs to the end."""
    lines = text.split("\n")
    fence: str | None = None
    for number, line in enumerate(lines):
        match = _FENCE.match(line)
        if fence is None:
            if match and not (match.group(1)[0] == "`" and "`" in match.group(2)):
                fence = match.group(1)
                lines[number] = _blank(line)
        else:
            closes = (
                match is not None
                and match.group(1)[0] == fence[0]
                and len(match.group(1)) >= len(fence)
                and not match.group(2).strip()
            )
            lines[number] = _blank(line)
            if closes:
                fence = None
    return "\n".join(lines)


def _without_code(text: str) -> str:
    """Blank out fenced code blocks and inline code spans."""
    text = _without_fenced_code(text)
    return _CODE_SPAN.sub(lambda match: _blank(match.group(0)), text)


def _links_in(text: str, offset: int = 0) -> list[tuple[int, str]]:
    """(offset, target) of each inline link or image, those nested in a link's text too."""
    found = []
    for match in _LINK.finditer(text):
        found.append((offset + match.start(), match.group("target")))
        found.extend(_links_in(match.group("text"), offset + match.start("text")))
    return found


def links(path: Path) -> list[Link]:
    """Every link of a Markdown file outside code: inline links, images and reference
    definitions."""
    text = _without_code(path.read_text(encoding="utf-8"))
    targets = _links_in(text)
    targets += [(match.start(), match.group("target")) for match in _REFERENCE.finditer(text)]
    return [
        Link(path, text.count("\n", 0, start) + 1, target.removeprefix("<").removesuffix(">"))
        for start, target in sorted(targets)
    ]


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: the rendered text, lower-cased, without characters
    other than letters, digits, spaces, hyphens and underscores; spaces become hyphens."""
    text = re.sub(r"!?\[((?:[^\[\]]|\[[^\[\]]*\])*)\]\([^)]*\)", r"\1", heading)  # links
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The anchors of a Markdown file's headings (ATX and setext, outside fenced code);
    a repeated heading gets -1, -2, ... as on GitHub."""
    lines = _without_fenced_code(path.read_text(encoding="utf-8")).split("\n")
    headings = []
    for number, line in enumerate(lines):
        if match := _ATX_HEADING.match(line):
            headings.append(match.group("text") or "")
        elif (
            number + 1 < len(lines)
            and line.strip()
            and _SETEXT_UNDERLINE.match(lines[number + 1])
            and not _ATX_HEADING.match(line)
        ):
            headings.append(line)
    found: set[str] = set()
    seen: dict[str, int] = {}
    for heading in headings:
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def broken(link: Link, anchor_cache: dict[Path, set[str]]) -> bool:
    """Whether a relative link points to no file, or to no heading of a Markdown file."""
    file_part, _, fragment = link.target.partition("#")
    file_part = unquote(file_part.partition("?")[0])
    if not file_part:
        target = link.path
    elif file_part.startswith("/"):  # relative to the repository, as on GitHub
        target = ROOT / file_part.lstrip("/")
    else:
        target = link.path.parent / file_part
    if not target.exists():
        return True
    if fragment and target.is_file() and target.suffix.lower() == ".md":
        if target not in anchor_cache:
            anchor_cache[target] = anchors(target)
        return unquote(fragment) not in anchor_cache[target]
    return False


def whole_word(name: str, text: str) -> bool:
    return re.search(rf"(?<![\w]){re.escape(name)}(?![\w])", text) is not None


def test_parser_sees_links_and_headings_as_github_does():
    sample = ROOT / "README.md"  # only for the path in Link; the text is given here
    text = (
        "# Serving with `gunicorn`, and Prometheus!\n"
        "[a](one.md) ![b](img.png) [![c](badge.svg)](two.md#x 'title')\n"
        "`[code](not-a-link.md)` [split\nover lines](three.md)\n"
        "```md\n[fenced](not-a-link-either.md)\n```\n"
        "[mail](mailto:x@example.com)\n"
    )
    targets = [(text.count("\n", 0, at) + 1, t) for at, t in _links_in(_without_code(text))]
    assert targets == [
        (2, "one.md"),
        (2, "img.png"),
        (2, "two.md#x"),
        (2, "badge.svg"),
        (3, "three.md"),
        (8, "mailto:x@example.com"),
    ]
    assert (
        slug("Serving with `gunicorn`, and Prometheus!") == "serving-with-gunicorn-and-prometheus"
    )
    assert slug("/metrics: formats") == "metrics-formats"
    assert slug("[Linked](x.md) heading_1") == "linked-heading_1"
    assert str(Link(sample, 3, "x.md#y")) == "README.md:3: x.md#y"


def test_relative_links_resolve():
    checked: list[Link] = []
    anchor_cache: dict[Path, set[str]] = {}
    for path in MARKDOWN_FILES:
        for link in links(path):
            if _EXTERNAL.match(link.target) or not link.target:
                continue
            checked.append(link)
    failures = [str(link) for link in checked if broken(link, anchor_cache)]
    # A parser that finds nothing must not pass: the README alone links every docs page.
    assert len(checked) >= 10, f"only {len(checked)} relative links found: is the parser broken?"
    assert any("#" in link.target for link in checked), "no link with a #fragment was checked"
    assert not failures, "broken links in the documentation:\n" + "\n".join(failures)


def test_every_setting_and_environment_variable_is_documented():
    from tamma_metrics.conf import DEFAULTS

    settings_page = SETTINGS_PAGE.read_text(encoding="utf-8")
    serving_page = SERVING_PAGE.read_text(encoding="utf-8")
    source = PROJECT_SETTINGS.read_text(encoding="utf-8")
    environment = sorted(
        set(
            re.findall(
                r"""os\.(?:environ\.get\(|environ\[|getenv\()\s*["']([A-Za-z_]\w*)["']""",
                source,
            )
        )
    )

    assert len(DEFAULTS) >= 20, f"only {len(DEFAULTS)} settings in tamma_metrics.conf.DEFAULTS"
    assert len(environment) >= 5, f"only {environment} read from the environment"
    missing_settings = [name for name in DEFAULTS if not whole_word(name, settings_page)]
    missing_environment = [
        name
        for name in environment
        if not whole_word(name, settings_page) and not whole_word(name, serving_page)
    ]
    assert not missing_settings and not missing_environment, (
        f"settings missing from docs/settings.md: {missing_settings}; "
        f"environment variables of project/settings.py missing from docs/settings.md and "
        f"docs/serving.md: {missing_environment}"
    )
