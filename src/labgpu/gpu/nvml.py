"""NVIDIA GPUs through NVML (the ``nvidia-ml-py`` package, imported as ``pynvml``).

Every call opens and closes its own NVML session, so nothing stays initialised between calls and a
host without the library or the driver gets a clear :class:`NvmlUnavailable`, never an import error.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from labgpu.errors import Unavailable

INSTALL_HINT = "pip install nvidia-ml-py (it ships with labgpu)"
DRIVER_HINT = "install the NVIDIA driver (libnvidia-ml.so.1 comes with it) and check that `nvidia-smi` works"


class NvmlUnavailable(Unavailable):
    """NVML cannot be used here: the package, the library or the driver is missing."""

    reason = "nvml-unavailable"


@dataclass(frozen=True)
class GpuInfo:
    """One physical GPU as NVML sees it."""

    index: int
    uuid: str
    pci_bus_id: str  # NVML's form, e.g. "00000000:3B:00.0"
    name: str
    memory_total: int  # bytes
    minor_number: int | None = None  # N of /dev/nvidiaN

    @property
    def pci_address(self) -> str:
        """The sysfs/lspci form, e.g. "0000:3b:00.0" (NVML pads the domain to 8 digits)."""
        domain, _, rest = self.pci_bus_id.partition(":")
        return f"{domain[-4:]}:{rest}".lower()


@dataclass(frozen=True)
class NvmlProbe:
    """The outcome of trying NVML once: whether it works, what it said, driver and GPU count."""

    ok: bool
    detail: str
    driver_version: str = ""
    gpu_count: int = 0


def _text(value: Any) -> str:
    # Older nvidia-ml-py releases return bytes.
    return value.decode() if isinstance(value, bytes) else str(value)


def _import() -> ModuleType:
    try:
        return importlib.import_module("pynvml")
    except ImportError:
        raise NvmlUnavailable("nvidia-ml-py is not installed", hint=INSTALL_HINT) from None


def _explain(pynvml: ModuleType, exc: Exception) -> NvmlUnavailable:
    value = getattr(exc, "value", None)
    if value == pynvml.NVML_ERROR_LIBRARY_NOT_FOUND:
        return NvmlUnavailable(
            "NVML library libnvidia-ml.so.1 not found: the NVIDIA driver is not installed", hint=DRIVER_HINT
        )
    if value == pynvml.NVML_ERROR_DRIVER_NOT_LOADED:
        return NvmlUnavailable(
            "the NVIDIA kernel driver is not loaded",
            hint="load it (modprobe nvidia) or reboot after installing the driver",
        )
    if value == getattr(pynvml, "NVML_ERROR_LIB_RM_VERSION_MISMATCH", None):
        return NvmlUnavailable(
            "NVML and the loaded NVIDIA kernel driver have different versions",
            hint="reboot (the driver was upgraded but the old kernel module is still loaded)",
        )
    if value == pynvml.NVML_ERROR_NO_PERMISSION:
        return NvmlUnavailable(
            "no permission to open the NVIDIA devices",
            hint="check the mode of /dev/nvidiactl and /dev/nvidia*",
        )
    return NvmlUnavailable(f"NVML failed: {exc}", hint=DRIVER_HINT)


@contextmanager
def nvml_session() -> Iterator[ModuleType]:
    """An initialised NVML for the duration of the block. Raises NvmlUnavailable."""
    pynvml = _import()
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        raise _explain(pynvml, exc) from None
    try:
        yield pynvml
    except pynvml.NVMLError as exc:
        raise _explain(pynvml, exc) from None
    finally:
        with suppress(pynvml.NVMLError):
            pynvml.nvmlShutdown()


def driver_version() -> str:
    """The NVIDIA driver's version, e.g. "550.54.15". Raises NvmlUnavailable."""
    with nvml_session() as nvml:
        return _text(nvml.nvmlSystemGetDriverVersion())


def list_gpus() -> list[GpuInfo]:
    """Every GPU NVML sees, by index. Raises NvmlUnavailable when NVML cannot be used."""
    gpus: list[GpuInfo] = []
    with nvml_session() as nvml:
        for index in range(int(nvml.nvmlDeviceGetCount())):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            try:
                minor: int | None = int(nvml.nvmlDeviceGetMinorNumber(handle))
            except nvml.NVMLError:
                minor = None
            gpus.append(
                GpuInfo(
                    index=index,
                    uuid=_text(nvml.nvmlDeviceGetUUID(handle)),
                    pci_bus_id=_text(nvml.nvmlDeviceGetPciInfo(handle).busId),
                    name=_text(nvml.nvmlDeviceGetName(handle)),
                    memory_total=int(nvml.nvmlDeviceGetMemoryInfo(handle).total),
                    minor_number=minor,
                )
            )
    return gpus


def probe() -> NvmlProbe:
    """Try NVML once: init, driver version, device count. Never raises."""
    try:
        with nvml_session() as nvml:
            version = _text(nvml.nvmlSystemGetDriverVersion())
            count = int(nvml.nvmlDeviceGetCount())
    except NvmlUnavailable as exc:
        detail = exc.message + (f" ({exc.hint})" if exc.hint else "")
        return NvmlProbe(ok=False, detail=detail)
    plural = "GPU" if count == 1 else "GPUs"
    return NvmlProbe(
        ok=True,
        detail=f"NVML works: driver {version}, {count} {plural}",
        driver_version=version,
        gpu_count=count,
    )


def nvml_available() -> tuple[bool, str]:
    """Whether NVML can be used here, and why not (or what it found)."""
    result = probe()
    return result.ok, result.detail
