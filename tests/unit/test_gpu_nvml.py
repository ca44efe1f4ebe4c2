"""The real NVML code path (NvmlSource) driven by a scripted stand-in for the pynvml module, the
recorded-data fake, and what NVML says on THIS host (no driver here)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pynvml
import pytest

from labgpu.gpu.fake import RecordedNvml, record
from labgpu.gpu.nvml import GpuSample, NvmlReading, NvmlSource, NvmlUnavailable, pci_address, probe

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "gpu"


@dataclass
class FakeGpu:
    uuid: str
    bus: str
    name: str = "NVIDIA RTX A6000"
    total: int = 48 * 2**30
    used: int = 2**30
    util: tuple[int, int] | None = (50, 20)
    temp: int = 60
    power_mw: int | None = 150_000
    mig: list[int] | None = None
    compute: list[tuple[int, int | None]] = field(default_factory=list)
    graphics: list[tuple[int, int | None]] = field(default_factory=list)
    fail: dict[str, int] = field(default_factory=dict)  # function name -> NVML error value


class ScriptedPynvml:
    """Stands in for the pynvml module: the real error classes and constants, scripted answers."""

    NVMLError = pynvml.NVMLError

    def __init__(self, gpus: list[FakeGpu], *, init_error: int | None = None) -> None:
        self.gpus = gpus
        self.init_error = init_error
        self.calls: list[str] = []
        for name in dir(pynvml):
            if name.startswith("NVML_"):
                setattr(self, name, getattr(pynvml, name))

    def _gpu(self, handle: int, fn: str) -> FakeGpu:
        self.calls.append(fn)
        gpu = self.gpus[handle]
        if fn in gpu.fail:
            raise pynvml.NVMLError(gpu.fail[fn])
        return gpu

    def nvmlInit(self) -> None:
        self.calls.append("init")
        if self.init_error is not None:
            raise pynvml.NVMLError(self.init_error)

    def nvmlShutdown(self) -> None:
        self.calls.append("shutdown")

    def nvmlSystemGetDriverVersion(self) -> str:
        return "550.54.15"

    def nvmlSystemGetCudaDriverVersion_v2(self) -> int:
        return 12040

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:
        self._gpu(i, "handle")
        return i

    def nvmlDeviceGetUUID(self, h: int) -> bytes:
        return self._gpu(h, "uuid").uuid.encode()  # old releases answer bytes

    def nvmlDeviceGetPciInfo(self, h: int) -> Any:
        return SimpleNamespace(busId=self._gpu(h, "pci").bus)

    def nvmlDeviceGetName(self, h: int) -> str:
        return self._gpu(h, "name").name

    def nvmlDeviceGetMemoryInfo(self, h: int) -> Any:
        g = self._gpu(h, "memory")
        return SimpleNamespace(total=g.total, used=g.used, free=g.total - g.used)

    def nvmlDeviceGetUtilizationRates(self, h: int) -> Any:
        g = self._gpu(h, "util")
        if g.util is None:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return SimpleNamespace(gpu=g.util[0], memory=g.util[1])

    def nvmlDeviceGetTemperature(self, h: int, sensor: int) -> int:
        assert sensor == pynvml.NVML_TEMPERATURE_GPU
        return self._gpu(h, "temp").temp

    def nvmlDeviceGetPowerUsage(self, h: int) -> int:
        g = self._gpu(h, "power")
        if g.power_mw is None:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return g.power_mw

    def nvmlDeviceGetEnforcedPowerLimit(self, h: int) -> int:
        self._gpu(h, "limit")
        return 300_000

    def nvmlDeviceGetMigMode(self, h: int) -> list[int]:
        g = self._gpu(h, "mig")
        if g.mig is None:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return g.mig

    def nvmlDeviceGetMinorNumber(self, h: int) -> int:
        self._gpu(h, "minor")
        return h

    def nvmlDeviceGetComputeRunningProcesses(self, h: int) -> list[Any]:
        return [SimpleNamespace(pid=p, usedGpuMemory=m) for p, m in self._gpu(h, "compute").compute]

    def nvmlDeviceGetGraphicsRunningProcesses(self, h: int) -> list[Any]:
        return [SimpleNamespace(pid=p, usedGpuMemory=m) for p, m in self._gpu(h, "graphics").graphics]


def two_gpus() -> list[FakeGpu]:
    return [
        FakeGpu("GPU-aaaa", "00000000:3B:00.0", compute=[(300, 2**30), (100, None)], graphics=[(100, 512)]),
        FakeGpu("GPU-bbbb", "00000000:AF:00.0", util=None, power_mw=None, mig=[0, 0]),
    ]


def test_reading_every_field_of_every_gpu() -> None:
    fake = ScriptedPynvml(two_gpus())
    reading = NvmlSource(fake).read()  # type: ignore[arg-type]
    assert reading.driver_version == "550.54.15" and reading.cuda_version == "12.4"
    g0, g1 = reading.gpus
    assert (g0.uuid, g0.pci_address, g0.utilization, g0.memory_utilization) == (
        "GPU-aaaa",
        "0000:3b:00.0",
        50,
        20,
    )
    assert (g0.power_watts, g0.power_limit_watts, g0.temperature, g0.mig_enabled) == (150.0, 300.0, 60, None)
    # One entry per pid, sorted; a pid in both lists is C+G; unknown memory stays unknown.
    assert [(p.pid, p.type, p.used_memory) for p in g0.processes] == [
        (100, "compute+graphics", 512),
        (300, "compute", 2**30),
    ]
    # Unsupported fields are None, not an error; MIG present but off.
    assert (g1.utilization, g1.power_watts, g1.mig_enabled, g1.error) == (None, None, False, None)
    assert fake.calls[0] == "init" and fake.calls[-1] == "shutdown"


def test_a_lost_gpu_is_reported_and_the_others_still_read() -> None:
    gpus = two_gpus()
    gpus[0].fail["util"] = pynvml.NVML_ERROR_GPU_IS_LOST
    reading = NvmlSource(ScriptedPynvml(gpus)).read()  # type: ignore[arg-type]
    lost, fine = reading.gpus
    assert lost.error is not None and "GPU 0" in lost.error and "lost" in lost.error.lower()
    assert lost.uuid == "GPU-aaaa"  # what was read before it failed is kept
    assert fine.ok and fine.uuid == "GPU-bbbb"


def test_a_gpu_that_cannot_even_give_its_handle() -> None:
    gpus = two_gpus()
    gpus[1].fail["handle"] = pynvml.NVML_ERROR_GPU_IS_LOST
    reading = NvmlSource(ScriptedPynvml(gpus)).read()  # type: ignore[arg-type]
    assert reading.gpus[1].error and reading.gpus[1].uuid == "" and reading.gpus[0].ok


def test_processes_of_other_users_without_memory() -> None:
    gpus = [FakeGpu("GPU-a", "00000000:01:00.0", compute=[(7, None)])]
    gpus[0].fail["graphics"] = pynvml.NVML_ERROR_NO_PERMISSION
    (g,) = NvmlSource(ScriptedPynvml(gpus)).read().gpus  # type: ignore[arg-type]
    assert [(p.pid, p.used_memory) for p in g.processes] == [(7, None)]


def test_mig_on_gives_no_utilization() -> None:
    gpus = [FakeGpu("GPU-a", "00000000:07:00.0", util=None, mig=[1, 1], compute=[(9, 2**30)])]
    (g,) = NvmlSource(ScriptedPynvml(gpus)).read().gpus  # type: ignore[arg-type]
    assert g.mig_enabled is True and g.utilization is None and g.processes[0].pid == 9


@pytest.mark.parametrize(
    ("error", "needle"),
    [
        (pynvml.NVML_ERROR_LIBRARY_NOT_FOUND, "libnvidia-ml.so.1 not found"),
        (pynvml.NVML_ERROR_DRIVER_NOT_LOADED, "kernel driver is not loaded"),
        (pynvml.NVML_ERROR_LIB_RM_VERSION_MISMATCH, "different versions"),
        (pynvml.NVML_ERROR_NO_PERMISSION, "no permission"),
    ],
)
def test_no_library_or_driver_is_a_clear_unavailable(error: int, needle: str) -> None:
    with pytest.raises(NvmlUnavailable) as info:
        NvmlSource(ScriptedPynvml([], init_error=error)).read()  # type: ignore[arg-type]
    assert needle in info.value.message and info.value.hint


def test_this_host_answers_through_the_real_library() -> None:
    """No mocking: the real pynvml on this machine. Here (no driver) NVML is unavailable with a
    clear reason; on a GPU host the same test reads real GPUs."""
    result = probe()
    if not result.ok:
        with pytest.raises(NvmlUnavailable):
            NvmlSource().read()
        assert "NVML" in result.detail or "NVIDIA" in result.detail
    else:
        reading = NvmlSource().read()
        assert len(reading.gpus) == result.gpu_count and all(
            g.uuid.startswith(("GPU-", "MIG-")) for g in reading.gpus
        )


def test_recordings_round_trip(tmp_path: Path) -> None:
    data = json.loads((FIXTURES / "nvml" / "four-gpus.json").read_text())
    reading = NvmlReading.from_json(data["reading"])
    assert len(reading.gpus) == 4 and isinstance(reading.gpus[0], GpuSample)
    path = tmp_path / "r.json"
    again = record(RecordedNvml(reading), path)
    assert again == reading
    assert RecordedNvml.from_file(path).read() == reading


def test_the_fake_can_be_a_host_without_nvml() -> None:
    with pytest.raises(NvmlUnavailable, match="driver"):
        RecordedNvml(unavailable="the NVIDIA kernel driver is not loaded").read()


def test_pci_address_forms() -> None:
    assert pci_address("00000000:3B:00.0") == "0000:3b:00.0"
    assert pci_address("0000:3b:00.0") == "0000:3b:00.0"
