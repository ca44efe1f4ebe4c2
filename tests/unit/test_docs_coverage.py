"""Every `labgpu` command and option is documented somewhere in the English docs.

The rule, on the markdown of README.md and docs/**/*.md (the translations in zh/ folders are not searched):

- Only code counts: inline code spans and the lines of fenced code blocks. Prose that merely uses the word
  "list" or "show" documents nothing.
- A command is documented when its words appear as consecutive words of one code span or one code-block line:
  `labgpu member add alice`, or without the program name, `member add NAME`. A top-level command
  (`labgpu doctor`) needs the `labgpu` in front: the single word `doctor` says too little. Words, not
  substrings: `member snapshot-rm` does not document `member snapshot`.
- An option is documented when it appears in code in a section (a heading and the text up to the next heading)
  that documents its command: `--ssh-key` near `labgpu member add`, not on another page nor under another
  heading. Within one code span or line the words after a command are that command's
  (`labgpu member set alice --disk 200GiB` documents `member set --disk`, not `member add --disk`). An option
  in code that follows no command (`--json` in a sentence) belongs to the commands the section's heading
  names, or, under a heading that names none, to every command the section names.
- For an on/off pair the name that changes something must appear: `--no-homes` when the default is on,
  `--force` when it is off, both names when there is no default (`--rdp` and `--no-rdp`).
- Hidden commands and options (test hooks such as `--replay`) and `--help` are not required; groups are
  documented through their commands, and the root's own options (`--config`) anywhere in code.

The checker is pure: :func:`commands_in` reads a click command, :func:`undocumented` takes the commands and the
pages' texts. The tests at the bottom show that it reports what a broken docs text lacks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer.main

from labgpu.cli.main import app

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Command:
    """One command of the tree: its words (without `labgpu`) and the option names it must be documented
    with; each entry of `options` is a tuple of names of which any one will do."""

    words: tuple[str, ...]
    options: tuple[tuple[str, ...], ...]
    leaf: bool = True


def _option_names(param: Any) -> list[tuple[str, ...]]:
    """The names a user types to change something, as the module docstring says."""
    long = [name for name in param.opts if name.startswith("--") and name != "--help"]
    off = [name for name in param.secondary_opts if name.startswith("--")]
    if not long:
        return []
    if not (param.is_flag and off):
        return [tuple(long)]
    if param.default is True:
        return [tuple(off)]
    if param.default is False:
        return [tuple(long)]
    return [tuple(long), tuple(off)]


def commands_in(command: Any, words: tuple[str, ...] = ()) -> list[Command]:
    """Every visible command under a click command (a Typer app through typer.main.get_command), depth first."""
    if getattr(command, "hidden", False):
        return []
    options = tuple(
        names
        for param in command.params
        if param.param_type_name == "option" and not param.hidden
        for names in _option_names(param)
    )
    subcommands = getattr(command, "commands", None)
    found = [Command(words, options, leaf=subcommands is None)]
    for name, sub in (subcommands or {}).items():
        found += commands_in(sub, (*words, name))
    return found


_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})[^\n]*\n(.*?)^ {0,3}\1", re.M | re.S)
_SPAN = re.compile(r"`([^`]+)`")
_TOKEN = re.compile(r"[^\s`()|;,'\"\[\]{}<>=$]+")


def sections(markdown: str) -> list[str]:
    """A markdown text cut before each heading; a `#` line inside a fenced code block is a comment, not one."""
    found: list[list[str]] = [[]]
    fence = ""
    for line in markdown.splitlines():
        mark = re.match(r" {0,3}(`{3,}|~{3,})", line)
        if mark and (not fence or mark.group(1).startswith(fence)):
            fence = "" if fence else mark.group(1)
        elif not fence and re.match(r" {0,3}#{1,6}(\s|$)", line):
            found.append([])
        found[-1].append(line)
    return ["\n".join(lines) + "\n" for lines in found]


def code_lines(markdown: str) -> list[list[str]]:
    """The words of each code span and of each line of each fenced code block of a markdown text."""
    segments: list[str] = []
    for block in _FENCE.finditer(markdown):
        segments += block.group(2).splitlines()
    segments += _SPAN.findall(_FENCE.sub("", markdown))
    return [_TOKEN.findall(segment) for segment in segments]


def _named_at(tokens: list[str], i: int, commands: list[Command]) -> tuple[Command, int] | None:
    """The command whose words start at tokens[i] (the longest, so `member key add` beats `member key`), and
    where its words end."""
    best: tuple[Command, int] | None = None
    for command in commands:
        n = len(command.words)
        if tuple(tokens[i : i + n + 1]) == ("labgpu", *command.words):
            end = i + n + 1
        elif n > 1 and tuple(tokens[i : i + n]) == command.words:
            end = i + n
        else:
            continue
        if best is None or end > best[1]:
            best = (command, end)
    return best


def _read(
    lines: list[list[str]], commands: list[Command]
) -> tuple[set[Command], dict[Command, set[str]], set[str]]:
    """One section's code: the commands it names, the words that follow each (up to the next command in the
    same span or line), and the words of spans and lines that name no command before them."""
    named: set[Command] = set()
    after: dict[Command, set[str]] = {}
    free: set[str] = set()
    for tokens in lines:
        owner: Command | None = None
        i = 0
        while i < len(tokens):
            match = _named_at(tokens, i, commands)
            if match:
                owner, i = match
                named.add(owner)
                continue
            (after.setdefault(owner, set()) if owner else free).add(tokens[i])
            i += 1
    return named, after, free


def undocumented(commands: list[Command], pages: dict[str, str]) -> list[str]:
    """What the pages (name -> markdown) do not document, one line each: `labgpu member show` for a command,
    `labgpu member add --disk` for an option of a documented command."""
    read: list[tuple[set[Command], set[Command], dict[Command, set[str]], set[str]]] = []
    for text in pages.values():
        for section in sections(text):
            named, after, free = _read(code_lines(section), commands)
            heading = (
                _read(code_lines(section.partition("\n")[0]), commands)[0]
                if section.startswith("#")
                else set()
            )
            read.append((named, heading or named, after, free))
    missing: list[str] = []
    for command in commands:
        name = " ".join(("labgpu", *command.words))
        in_sections = [
            (after, free if command in owners else set())
            for named, owners, after, free in read
            if command in named
        ]
        if command.leaf and not in_sections and command.words:
            missing.append(name)
            continue
        if not command.words:  # the root: its options on any page, anywhere in code
            in_sections = [(after, free) for _, _, after, free in read]
        words = set().union(*(after.get(command, set()) | free for after, free in in_sections))
        missing += [f"{name} {names[0]}" for names in command.options if not words & set(names)]
    return missing


def pages_in(root: Path) -> dict[str, str]:
    """The English docs: README.md and docs/**/*.md without the translations (every zh/ folder)."""
    paths = [root / "README.md", *sorted((root / "docs").rglob("*.md"))]
    return {
        str(path.relative_to(root)): path.read_text()
        for path in paths
        if "zh" not in path.relative_to(root).parts
    }


def _real_tree() -> list[Command]:
    return commands_in(typer.main.get_command(app))


def test_every_command_and_option_is_documented() -> None:
    missing = undocumented(_real_tree(), pages_in(ROOT))
    assert not missing, "documented nowhere in README.md or docs/ (see this test's docstring):\n" + "\n".join(
        missing
    )


def test_the_tree_is_the_real_one() -> None:
    commands = {" ".join(c.words): c for c in _real_tree()}
    assert {"member add", "member key rm", "host gateway enable", "backup restore"} <= set(commands)
    assert ("--ssh-key",) in commands["member add"].options
    assert ("--no-homes",) in commands["backup restore"].options  # on by default: the off name counts
    assert ("--rdp",) in commands["member set"].options and ("--no-rdp",) in commands["member set"].options
    assert not any("--replay" in names for c in commands.values() for names in c.options)  # hidden
    assert not any("--help" in names for c in commands.values() for names in c.options)


TREE = [
    Command((), (("--config",),), leaf=False),
    Command(("doctor",), (("--json",),)),
    Command(("member",), (), leaf=False),
    Command(("member", "snapshot"), ()),
    Command(("member", "add"), (("--ssh-key",), ("--disk",))),
    Command(("member", "snapshot-rm"), (("--yes",),)),
]

DOCS = {
    "README.md": "Start with `labgpu doctor --json` and `labgpu --config /etc/x.toml`.\n",
    "docs/members.md": (
        "# Members\n\n"
        "```sh\nlabgpu member add alice --ssh-key ~/.ssh/id.pub\nlabgpu member snapshot alice\n```\n\n"
        "`member add` takes `--disk 50GiB`; `member snapshot-rm NAME SNAP --yes` deletes one.\n"
    ),
}


def test_the_checker_passes_complete_docs() -> None:
    assert undocumented(TREE, DOCS) == []


def test_a_removed_command_is_reported() -> None:
    docs = {
        **DOCS,
        "docs/members.md": DOCS["docs/members.md"].replace("`member snapshot-rm NAME SNAP --yes`", ""),
    }
    assert undocumented(TREE, docs) == ["labgpu member snapshot-rm"]


def test_a_removed_option_is_reported() -> None:
    docs = {**DOCS, "docs/members.md": DOCS["docs/members.md"].replace("`--disk 50GiB`", "a size")}
    assert undocumented(TREE, docs) == ["labgpu member add --disk"]


def test_an_option_on_another_page_or_under_another_heading_does_not_count() -> None:
    docs = {
        **DOCS,
        "docs/members.md": DOCS["docs/members.md"].replace(" --ssh-key ~/.ssh/id.pub", "")
        + "\n## Keys\n\nUse `--ssh-key` (of another command).\n",
        "docs/other.md": "Use `--ssh-key` somewhere else.\n",
    }
    assert undocumented(TREE, docs) == ["labgpu member add --ssh-key"]


def test_a_comment_in_a_code_block_is_not_a_heading() -> None:
    docs = {**DOCS, "docs/members.md": DOCS["docs/members.md"].replace("```sh\n", "```sh\n# add one\n")}
    assert undocumented(TREE, docs) == []


def test_prose_words_and_prefixes_are_not_commands() -> None:
    docs = {
        "README.md": "The doctor says member add in prose; `doctor --json`; `labgpu member snapshot-rm x --yes`.\n"
        "`labgpu --config f`\n",
    }
    assert undocumented(TREE, docs) == ["labgpu doctor", "labgpu member snapshot", "labgpu member add"]


def test_a_code_block_line_is_code_and_the_text_around_it_is_not() -> None:
    block = "```\nlabgpu doctor --json\n```\nmember add, member snapshot\n"
    docs = {"README.md": block + "`labgpu --config x` `member snapshot-rm --yes`\n"}
    assert undocumented(TREE, docs) == ["labgpu member snapshot", "labgpu member add"]


def test_an_option_after_another_command_is_that_commands() -> None:
    tree = [*TREE, Command(("member", "set"), (("--disk",),))]
    docs = {
        **DOCS,
        "docs/members.md": DOCS["docs/members.md"].replace("`--disk 50GiB`", "a size")
        + "\n## Changing\n\n`labgpu member set alice --disk 9GiB`, also after `member add`.\n",
    }
    assert undocumented(tree, docs) == ["labgpu member add --disk"]


def test_a_lone_option_belongs_to_the_command_its_heading_names() -> None:
    tree = [*TREE, Command(("member", "set"), (("--disk",),))]
    section = "\n## `member set`\n\n`member set NAME` (like `member add`) takes `--disk`.\n"
    docs = {**DOCS, "docs/members.md": DOCS["docs/members.md"].replace("`--disk 50GiB`", "a size") + section}
    assert undocumented(tree, docs) == ["labgpu member add --disk"]
    untitled = section.replace("`member set`\n", "Sizes\n")
    docs = {**DOCS, "docs/members.md": DOCS["docs/members.md"].replace("`--disk 50GiB`", "a size") + untitled}
    assert undocumented(tree, docs) == []


def test_the_real_docs_without_a_command_or_an_option_fail() -> None:
    pages = pages_in(ROOT)
    without_db_current = {
        name: "\n".join(line for line in text.splitlines() if "db current" not in line)
        for name, text in pages.items()
    }
    assert undocumented(_real_tree(), without_db_current) == ["labgpu db current"]
    without_no_homes = {name: text.replace("--no-homes", "") for name, text in pages.items()}
    assert undocumented(_real_tree(), without_no_homes) == ["labgpu backup restore --no-homes"]


# The admin guide in Chinese ---------------------------------------------------------------------------
#
# docs/admin/zh/ holds one page per English admin page (and docs/configuration.md's translation). A page
# drifts when the English one gains or loses a section, or when the CLI changes under it: the tests below
# say which. Their checker, :func:`unknown_in`, is pure and shown to catch what it is for.

ZH_ADMIN = ROOT / "docs" / "admin" / "zh"


def zh_pairs(root: Path = ROOT) -> dict[Path, Path]:
    """Each English admin page and its Chinese page (which may be missing)."""
    english = [*sorted((root / "docs" / "admin").glob("*.md")), root / "docs" / "configuration.md"]
    return {page: root / "docs" / "admin" / "zh" / page.name for page in english}


def heading_counts(markdown: str) -> tuple[int, ...]:
    """How many headings of each level, h1 to h4, outside code blocks."""
    levels = [len(m.group(1)) for s in sections(markdown) if (m := re.match(r" {0,3}(#{1,6})\s", s))]
    return tuple(levels.count(level) for level in (1, 2, 3, 4))


def all_options(command: Any) -> dict[tuple[str, ...], set[str]]:
    """Every command's words (without `labgpu`) -> every long option name it takes, hidden ones and
    --help included; the root's own options are valid after any command."""
    found: dict[tuple[str, ...], set[str]] = {}

    def walk(cmd: Any, words: tuple[str, ...]) -> None:
        names = {name for p in cmd.params for name in (*p.opts, *p.secondary_opts) if name.startswith("--")}
        found[words] = names | {"--help"}
        for name, sub in (getattr(cmd, "commands", None) or {}).items():
            walk(sub, (*words, name))

    walk(command, ())
    root = found[()]
    return {words: names | root for words, names in found.items()}


_COMMAND_WORD = re.compile(r"[a-z][a-z0-9-]*")
# Where a command starts in a line of code: its beginning (after a prompt, sudo or env variables) or after a
# shell separator; a comment ends it.
_PIECES = re.compile(r"&&|\|\||[;|]|\$\(|\)|`")
_LEAD = re.compile(r"^(?:sudo\s+)?(?:[A-Z_]+=\S*\s+)*")


def _invocations(markdown: str) -> list[tuple[list[str], bool]]:
    """The words of each `labgpu ...` command line in a text's code, and whether it is in a code block
    (a span may quote a message that starts with "labgpu")."""
    segments = [(line, True) for block in _FENCE.finditer(markdown) for line in block.group(2).splitlines()]
    segments += [(span, False) for span in _SPAN.findall(_FENCE.sub("", markdown))]
    found = []
    for segment, in_block in segments:
        line = re.sub(r"^[#$]\s+", "", segment.strip())
        for piece in _PIECES.split(re.split(r"\s#(?:\s|$)", line, maxsplit=1)[0]):
            words = _TOKEN.findall(_LEAD.sub("", piece.strip()))
            if words[:1] == ["labgpu"]:
                found.append((words[1:], in_block))
    return found


def unknown_in(options: dict[tuple[str, ...], set[str]], markdown: str) -> list[str]:
    """The `labgpu ...` commands and options in a text's code that the CLI does not have: a word after a
    group that is none of its commands (`labgpu member frob`), an option its command does not take. A span
    whose first word is no command at all is taken for a quoted message, a code-block line is not."""
    found: list[str] = []
    for tokens, in_block in _invocations(markdown):
        words: tuple[str, ...] = ()
        i = 0
        while i < len(tokens) and (*words, tokens[i]) in options:
            words = (*words, tokens[i])
            i += 1
        is_group = any(len(w) == len(words) + 1 and w[: len(words)] == words for w in options)
        if is_group and i < len(tokens) and _COMMAND_WORD.fullmatch(tokens[i]):
            if words or in_block:
                found.append(" ".join(("labgpu", *words, tokens[i])))
            continue
        for token in tokens[i:]:
            option = token.split("=", 1)[0].rstrip(".:,")
            if option.startswith("--") and len(option) > 2 and option not in options[words]:
                found.append(" ".join(("labgpu", *words, option)))
    return found


def test_every_english_admin_page_has_its_chinese_page() -> None:
    missing = [str(zh.relative_to(ROOT)) for zh in zh_pairs().values() if not zh.exists()]
    assert not missing, "translate these pages (docs/admin/zh/README.md says how):\n" + "\n".join(missing)
    extra = {p.name for p in ZH_ADMIN.glob("*.md")} - {zh.name for zh in zh_pairs().values()}
    assert not extra, f"Chinese pages without an English page: {sorted(extra)}"


def test_the_chinese_admin_pages_have_the_english_pages_sections() -> None:
    drift = [
        f"{zh.relative_to(ROOT)}: headings h1-h4 {heading_counts(zh.read_text())}, "
        f"{en.relative_to(ROOT)}: {heading_counts(en.read_text())}"
        for en, zh in zh_pairs().items()
        if zh.exists() and heading_counts(zh.read_text()) != heading_counts(en.read_text())
    ]
    assert not drift, "the English page changed its sections: bring the Chinese page along\n" + "\n".join(
        drift
    )


def test_the_admin_pages_name_only_commands_and_options_that_exist() -> None:
    options = all_options(typer.main.get_command(app))
    pages = [*zh_pairs(), *ZH_ADMIN.glob("*.md"), ROOT / "docs" / "zh" / "README.md"]
    wrong = [
        f"{page.relative_to(ROOT)}: {name}"
        for page in pages
        for name in unknown_in(options, page.read_text())
    ]
    assert not wrong, "no such command or option:\n" + "\n".join(wrong)


def test_the_chinese_settings_table_is_the_generated_one() -> None:
    from labgpu.cli.settings_reference import settings_reference_markdown

    table = settings_reference_markdown().split("\n", 1)[1]
    assert table in (ZH_ADMIN / "configuration.md").read_text(), "run scripts/gen-docs"


def test_the_translation_checks_catch_drift() -> None:
    root = {"--config", "--help"}
    options = {(): root, ("member",): root, ("member", "add"): {"--disk", *root}}
    text = (
        "`labgpu member add x --disk 5GiB --config f`\n```\nlabgpu member frob\n"
        "# labgpu member add --dsk 1    # a prompt, then --bad in a comment\nx && sudo labgpu frob\n```\n"
    )
    assert unknown_in(options, text) == ["labgpu member frob", "labgpu member add --dsk", "labgpu frob"]
    quoted = "`labgpu member ...`, `labgpu member add|rm`, `labgpu member`, `labgpu said no`, `labgpu: x --y`"
    assert unknown_in(options, quoted) == []
    assert unknown_in(options, "`labgpu member frob`") == ["labgpu member frob"]
    english = "# T\n\n## A\n\n```sh\n# a comment\n```\n\n## B\n\n### B.1\n"
    assert heading_counts(english) == (1, 2, 1, 0)
    assert heading_counts(english.replace("## B\n", "")) != heading_counts(english)


def test_the_links_of_the_chinese_pages_lead_somewhere() -> None:
    """A relative link of a Chinese page names a file that exists and, after `#`, one of its headings (as
    GitHub and the portal's guide make their anchors)."""
    from urllib.parse import unquote

    from labgpu.web.guide import slug

    pages = [
        *ZH_ADMIN.glob("*.md"),
        ROOT / "docs" / "zh" / "README.md",
        *(ROOT / "docs" / "member").rglob("*.md"),
    ]
    broken = []
    for page in pages:
        for href in re.findall(r"\]\(([^)\s]+)\)", _FENCE.sub("", page.read_text())):
            if re.match(r"[a-z]+:", href):
                continue
            path, _, anchor = href.partition("#")
            target = (page.parent / path).resolve() if path else page
            if not target.exists():
                broken.append(f"{page.relative_to(ROOT)}: {href}")
            elif anchor and target.is_file():
                headings = [slug(m) for m in re.findall(r"^#{1,6} (.+)$", target.read_text(), re.M)]
                if unquote(anchor) not in headings:
                    broken.append(f"{page.relative_to(ROOT)}: {href}")
    assert not broken, "links to nothing:\n" + "\n".join(broken)
