"""Mail through a real SMTP server on loopback."""

from __future__ import annotations

import pytest

from labgpu.errors import Unavailable
from labgpu.services.mail import send_mail
from labgpu.settings import load_settings
from tests.conftest import MailBox


def test_mail_reaches_a_real_smtp_server(smtp_server: MailBox, tmp_path) -> None:
    settings = load_settings(state_dir=tmp_path, **smtp_server.settings())
    assert send_mail(
        settings, to=["alice@uni.edu"], subject="Your container is ready", body="ssh -p 22000 ...\n"
    )
    [msg] = smtp_server.to("alice@uni.edu")
    assert msg["Subject"] == "Your container is ready"
    assert msg["From"] == "labgpu@lab.test"
    assert msg.get_content().replace("\r\n", "\n") == "ssh -p 22000 ...\n"


def test_no_smtp_host_means_no_mail_and_no_error(tmp_path) -> None:
    assert send_mail(load_settings(state_dir=tmp_path), to=["a@b.c"], subject="x", body="y") is False


def test_an_unreachable_smtp_server_is_one_clear_error(tmp_path) -> None:
    settings = load_settings(state_dir=tmp_path, smtp_host="127.0.0.1", smtp_port=1)
    with pytest.raises(Unavailable, match=r"127\.0\.0\.1:1\b"):
        send_mail(settings, to=["a@b.c"], subject="x", body="y")
