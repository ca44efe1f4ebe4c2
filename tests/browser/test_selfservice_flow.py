"""The usage pages and the members' self-service GPU actions in a real browser (Chromium through Playwright),
in English and Chinese, with screenshots under artifacts/screenshots/:

- a member's GPU usage page and the admin's lab usage page over a replayed day of 8 GPUs x 20 members (the
  FAKE ReplayedDay through the real job runner, tests/web/usage/lab.py): the figures shown are the day's;
- "tell me when N GPUs are free" on the GPU page: asked, listed, refused when asked twice, cancelled (the
  portal's GPUs from a REAL `labgpu agent` replaying a recorded reading, tests/web/gpus);
- no-GPU mode on My container, on a REAL LXD daemon: one click detaches the GPUs (the container keeps
  running), one click gives them back; the member's row and the daemon's container say so.

The Chinese pages are checked for untranslated strings (tests/web/test_i18n.untranslated)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from labgpu.services.gpus import _modes as gpu_modes
from labgpu.services.members._add import add_member, validate_request
from labgpu.services.portal import _accounts as accounts
from labgpu.store.models import Member
from labgpu.web.app import create_app
from tests.browser.conftest import log_in, screenshot, serve_app, serve_gpu_site
from tests.conftest import LabgpuEnv
from tests.web.conftest import PASSWORD
from tests.web.test_i18n import untranslated
from tests.web.usage.lab import ME, UsageLab, build_lab, replay

# The usage pages ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def usage_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UsageLab]:
    lab = build_lab(tmp_path_factory.mktemp("usage-browser"))
    replay(lab)
    yield lab
    lab.svc.engine.dispose()


def test_the_usage_pages_show_the_days_figures_in_english_and_chinese(
    usage_lab: UsageLab, browser: Any
) -> None:
    expected = usage_lab.expected_hours()
    app = create_app(usage_lab.settings, services=usage_lab.svc, background=False)
    with serve_app(app) as url:
        en = browser.new_context(locale="en-US")
        page = en.new_page()
        log_in(page, url, ME)
        page.click("header nav a[href='/usage']")
        page.wait_for_url(url + "/usage")
        heading = page.locator("#usage-chart h2").inner_text()
        assert heading == f"GPU-hours: {expected[ME]:.2f}"
        assert page.locator("#usage-chart svg").count() == 1
        mine = page.locator("#usage-by-gpu tfoot").inner_text()
        assert f"{expected[ME]:.2f}" in mine and "Total" in mine
        assert "m02" not in page.content()
        screenshot(page, "en-usage-member")

        en.close()
        boss = browser.new_context(locale="en-US")  # a context of its own: another login
        admin = boss.new_page()
        log_in(admin, url, "boss", next_path="/admin/usage", lands="/admin/usage")
        for member in ("m02", "m07", "m19"):
            row = admin.locator(f"#usage-by-member tr[data-name='{member}'] td.gpu-hours")
            assert row.inner_text() == f"{expected[member]:.2f}", member
        assert admin.locator("#usage-member svg, #usage-gpu svg, #usage-host svg").count() == 3
        assert "Per member" in admin.locator("#usage-member h2").inner_text()
        screenshot(admin, "en-usage-lab")
        boss.close()

        zh = browser.new_context(locale="zh-CN")
        page_zh = zh.new_page()
        log_in(page_zh, url, ME)
        page_zh.goto(url + "/usage")
        assert page_zh.locator("h1").inner_text() == "我的 GPU 用量"
        assert f"{expected[ME]:.2f}" in page_zh.locator("#usage-chart h2").inner_text()
        assert untranslated(page_zh.content()) == []
        screenshot(page_zh, "zh-usage-member")
        zh.close()
        boss_zh = browser.new_context(locale="zh-CN")
        admin_zh = boss_zh.new_page()
        log_in(admin_zh, url, "boss", next_path="/admin/usage", lands="/admin/usage")
        assert admin_zh.locator("h1").inner_text() == "实验室的 GPU 用量"
        row = admin_zh.locator("#usage-by-member tr[data-name='m02'] td.gpu-hours")
        assert row.inner_text() == f"{expected['m02']:.2f}"
        assert untranslated(admin_zh.content()) == []
        screenshot(admin_zh, "zh-usage-lab")
        boss_zh.close()


# "Tell me when N GPUs are free" -------------------------------------------------------------------


@pytest.fixture
def gpu_site(tmp_path: Path) -> Iterator[str]:
    """The portal with host gpu1 (booked mode, its GPUs from a served agent) and alice's container there."""
    with serve_gpu_site(tmp_path, members=("alice",)) as url:
        yield url


def test_a_member_asks_to_be_told_when_gpus_are_free_and_cancels(gpu_site: str, browser: Any) -> None:
    url = gpu_site
    context = browser.new_context(locale="en-US")
    page = context.new_page()
    log_in(page, url, "alice")
    page.click("header nav a[href='/gpus']")
    page.wait_for_url(url + "/gpus")
    assert page.locator("#my-free-requests").count() == 0
    assert page.locator("#free-host").input_value() == "gpu1"  # her own host, preselected
    page.fill("#free-count", "2")
    page.click("#notify-free-button")
    page.wait_for_selector("#my-free-requests")
    assert (
        page.locator(".notice")
        .inner_text()
        .startswith("You will be told once when 2 GPU(s) are free on gpu1")
    )
    row = page.locator("#my-free-requests tbody tr")
    assert row.count() == 1 and "gpu1" in row.inner_text()
    screenshot(page, "en-gpus-notify-free")

    page.fill("#free-count", "1")  # a second one on the same host: one sentence, nothing made
    page.click("#notify-free-button")
    assert "already waits for free GPUs on gpu1: cancel it first" in page.locator("#free-error").inner_text()
    assert page.locator("#my-free-requests tbody tr").count() == 1
    context.close()

    zh = browser.new_context(locale="zh-CN")
    page_zh = zh.new_page()
    log_in(page_zh, url, "alice")
    page_zh.goto(url + "/gpus")
    assert page_zh.locator("#notify-free h2").inner_text() == "GPU 空闲时通知我"
    assert untranslated(page_zh.content()) == []
    screenshot(page_zh, "zh-gpus-notify-free")
    page_zh.click("#my-free-requests button[type=submit]")
    page_zh.wait_for_selector(".notice")
    assert (
        page_zh.locator(".notice").inner_text().startswith("请求 ")
        and "已取消" in page_zh.locator(".notice").inner_text()
    )
    assert page_zh.locator("#my-free-requests").count() == 0
    zh.close()


# No-GPU mode on a real daemon ---------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.parametrize("daemon_kind", ["lxd"], indirect=True)
def test_a_member_switches_no_gpu_mode_on_and_off_on_my_container(
    labgpu_env: LabgpuEnv, runtime: Any, browser: Any
) -> None:
    svc = labgpu_env.services()
    name = f"ng{secrets.token_hex(4)}"
    gpu_modes.set_mode(svc, "shared")
    add_member(svc, validate_request(svc, name=name), wait_ssh=False)
    accounts.set_password(svc, name=name, password=PASSWORD)
    settings = labgpu_env.settings().model_copy(update={"trusted_proxies": "", "jobs_in_serve": False})
    app = create_app(settings, background=False)

    def row_says() -> bool:
        with svc.session() as session:
            return bool(session.scalars(select(Member.no_gpu).where(Member.name == name)).one())

    with serve_app(app) as url:
        en = browser.new_context(locale="en-US")
        page = en.new_page()
        log_in(page, url, name)
        assert page.locator("#my-gpus").inner_text() == "all"
        assert page.locator("#container-state").inner_text() == "Running"
        page.click("#gpus-off")
        page.wait_for_selector("#gpus-on")
        assert page.locator(".notice").inner_text() == "Your container has no GPU now (no-GPU mode)."
        assert page.locator("#my-gpus").inner_text() == "none (no-GPU mode)"
        assert "Your GPU choice (all)" in page.locator("#no-gpu-state").inner_text()
        assert page.locator("#container-state").inner_text() == "Running"  # nothing restarted
        assert row_says() is True
        inst = runtime.instances.get(name)
        assert inst.status == "Running" and not [d for d in inst.devices.values() if d.get("type") == "gpu"]
        screenshot(page, "en-me-no-gpu")
        en.close()

        zh = browser.new_context(locale="zh-CN")
        page_zh = zh.new_page()
        log_in(page_zh, url, name)
        assert page_zh.locator("#no-gpu h2").inner_text() == "无卡模式"
        assert page_zh.locator("#my-gpus").inner_text() == "无（无卡模式）"
        assert untranslated(page_zh.content()) == []
        screenshot(page_zh, "zh-me-no-gpu")
        page_zh.click("#gpus-on")
        page_zh.wait_for_selector("#gpus-off")
        assert page_zh.locator(".notice").inner_text() == "你的 GPU 已恢复。"
        assert page_zh.locator("#my-gpus").inner_text() == "all"
        assert row_says() is False
        screenshot(page_zh, "zh-me-gpus-back")
        zh.close()
