"""The member's guide as the portal renders it (labgpu.web.guide): the package's copy is docs/member, raw HTML
is escaped, links and anchors work as on the project's site, and the reader's own values replace the
examples."""

from __future__ import annotations

import filecmp
from pathlib import Path

from labgpu.web import guide

ROOT = Path(__file__).resolve().parents[2]


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_the_packaged_guide_is_docs_member() -> None:
    source, copy = ROOT / "docs" / "member", guide.PAGES_DIR
    assert _tree(copy) == _tree(source), "src/labgpu/web/guide/pages is stale: run scripts/gen-docs"
    assert not filecmp.dircmp(source, copy).diff_files


def test_raw_html_is_escaped_and_foreign_links_are_text() -> None:
    page = guide.GuidePage(
        name="x",
        title="x",
        source="# Hi <b>there</b>\n\n<script>alert(1)</script>\n\n<img src=x onerror=alert(1)>\n\n"
        "[bad](javascript:alert(1)) [admin](../admin/) [zh](zh/README.md) [ok](first-login.md#x) "
        "[web](https://example.org/)\n",
    )
    out = str(guide.render(page, "en"))
    assert "<script" not in out and "<img" not in out and "<b>" not in out
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in out
    assert 'href="javascript' not in out and 'href="../admin' not in out and 'href="zh/' not in out
    assert ">admin<" not in out and "admin" in out and "zh" in out
    assert '<a href="/help/first-login#x">ok</a>' in out
    assert '<a href="https://example.org/" rel="noopener noreferrer">web</a>' in out


def test_headings_get_githubs_anchors() -> None:
    assert guide.slug("`~/.ssh/config`: a short name for your container") == (
        "sshconfig-a-short-name-for-your-container"
    )
    assert guide.slug("Windows：MobaXterm 和 Xshell") == "windowsmobaxterm-和-xshell"
    assert guide.slug("端口转发（TensorBoard、Jupyter）") == "端口转发tensorboardjupyter"
    out = str(guide.render(guide.GuidePage("x", "x", "# A\n\n## Same\n\n## Same\n"), "en"))
    assert 'id="same"' in out and 'id="same-1"' in out


def test_the_readers_values_replace_the_examples_in_code_only() -> None:
    values = guide.ReaderValues(
        name="carol", address="10.0.0.5", user="ubuntu", ports={"ssh": 22017}, container_home="/srv/c/carol"
    )
    for locale in ("en", "zh_Hans"):
        out = str(guide.render(guide.pages(locale)["connecting"], locale, values))
        assert "ssh -p 22017 ubuntu@10.0.0.5" in out
        assert "Host labgpu-carol\n    HostName 10.0.0.5\n    Port 22017" in out
        assert "gpu1.lab.example.edu" not in out and "22001" not in out
    desktop = str(guide.render(guide.pages("en")["desktop"], "en", values))
    assert "22002" in desktop  # no RDP port: the example stays
    files = str(guide.render(guide.pages("en")["files"], "en", values))
    assert "<code>/srv/c/carol" in files and "<code>/home/ubuntu/alice" not in files  # prose quotes stay
    plain = str(guide.render(guide.pages("en")["connecting"], "en"))
    assert "ssh -p 22001 ubuntu@gpu1.lab.example.edu" in plain
