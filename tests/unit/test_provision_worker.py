"""The portal's provisioning worker: approved applications are provisioned several at a time, never
more than provision_workers, each exactly once. The provisioning itself is replaced by a fake that only
records when it runs (the real one, on real daemons: tests/web/test_application_provisioning.py and
the load test's 5 and 50 applications approved at once)."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace
from typing import Any

import pytest

from labgpu.services.portal import _applications as applications
from labgpu.services.portal import _provisioning as provisioning


class FakeProvisioning:
    """Stands in for provision_application: holds each call until released, counts overlaps."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running = 0
        self.most = 0
        self.done: list[int] = []
        self.release = threading.Event()

    def __call__(self, svc: Any, application_id: int) -> None:
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
        self.release.wait(10)
        with self.lock:
            self.running -= 1
            self.done.append(application_id)


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeProvisioning:
    fake = FakeProvisioning()
    monkeypatch.setattr(provisioning, "provision_application", fake)
    return fake


def wait_until(condition: Any, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return False


def test_approvals_are_provisioned_in_parallel_up_to_the_setting(fake: FakeProvisioning) -> None:
    svc = SimpleNamespace(settings=SimpleNamespace(provision_workers=3))
    worker = provisioning.ProvisionWorker(svc)  # type: ignore[arg-type]
    for application_id in range(1, 11):
        worker.enqueue(application_id)
        worker.enqueue(application_id)  # a second click on "approve" queues nothing more
    assert wait_until(lambda: fake.running == 3)
    time.sleep(0.2)
    assert fake.running == 3  # the 4th waits for a free worker
    fake.release.set()
    assert worker.wait_idle(10)
    assert sorted(fake.done) == list(range(1, 11))  # each exactly once
    assert fake.most == 3
    worker.stop()


def test_one_worker_provisions_one_at_a_time_and_a_stopped_worker_takes_nothing(
    fake: FakeProvisioning,
) -> None:
    svc = SimpleNamespace(settings=SimpleNamespace(provision_workers=4))
    worker = provisioning.ProvisionWorker(svc, workers=1)  # type: ignore[arg-type]
    fake.release.set()
    for application_id in (1, 2, 3):
        worker.enqueue(application_id)
    assert worker.wait_idle(10)
    assert fake.done == [1, 2, 3] and fake.most == 1
    worker.stop()
    worker.enqueue(4)
    time.sleep(0.2)
    assert fake.done == [1, 2, 3]


# Trying again after a daemon's error -------------------------------------------------------------------


def _approved(store: Any) -> int:
    from labgpu.store.models import Application, ApplicationStatus

    svc = store.svc()
    app = applications.submit(svc, name="newbie", email="newbie@lab.test", password="quiet-walnut-58-harbor")
    with svc.session() as session:
        row = session.get(Application, app.id)
        row.status = ApplicationStatus.APPROVED
        row.decided_by = "boss"
    return app.id


def test_a_daemon_error_is_tried_again_and_then_recorded(
    gpu_store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from labgpu.runtime.errors import OperationFailed

    app_id = _approved(gpu_store)
    tries: list[str] = []
    progress: list[str] = []

    def flaky(worker: Any, app: Any) -> None:  # stands in for the real provisioning
        progress.append(applications.get_application(worker, app.id).progress or "")
        tries.append(app.name)
        raise OperationFailed("start instance newbie: readdirent /x: bad file descriptor")

    monkeypatch.setattr(provisioning, "_provision_once", flaky)
    monkeypatch.setattr(provisioning, "RETRY_DELAYS_S", (0.0, 0.0))
    info = provisioning.provision_application(gpu_store.svc(), app_id)
    assert len(tries) == 3  # the first try and two more
    assert progress[1].startswith("trying again in 0s after: start instance newbie")
    assert (info.status, info.progress) == (
        "failed",
        "start instance newbie: readdirent /x: bad file descriptor",
    )


def test_wrong_input_fails_at_once(gpu_store: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from labgpu.errors import BadInput

    app_id = _approved(gpu_store)
    tries: list[str] = []

    def wrong(worker: Any, app: Any) -> None:
        tries.append(app.name)
        raise BadInput("unknown template 'nope'")

    monkeypatch.setattr(provisioning, "_provision_once", wrong)
    info = provisioning.provision_application(gpu_store.svc(), app_id)
    assert tries == ["newbie"]
    assert (info.status, info.progress) == ("failed", "unknown template 'nope'")
