"""NVIDIA GPUs through NVML (the ``nvidia-ml-py`` package, imported as ``pynvml``).

Every call opens and closes its own NVML session, so nothing stays initialised between calls and a
host without the library or the driver gets a clear :class:`NvmlUnavailable`, never an import error.

Everything labgpu reads from NVML goes through one small interface, :class:`GpuSource`, whose
``read()`` returns plain data (:class:`NvmlReading`). :class:`NvmlSource` is the real one;
:class:`labgpu.gpu.fake.RecordedNvml` replays a recorded reading in tests and the benchmark.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from types import ModuleType
from typing import Any, TypeVar

from labgpu.errors import Unavailable

INSTALL_HINT = "pip install nvidia-ml-py (it ships with labgpu)"
DRIVER_HINT = "install the NVIDIA driver (libnvidia-ml.so.1 comes with it) and check that `nvidia-smi` works"

T = TypeVar("T")


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
        return pci_address(self.pci_bus_id)


def pci_address(bus_id: str) -> str:
    """NVML's "00000000:3B:00.0" in the sysfs/lspci/LXD form "0000:3b:00.0"."""
    domain, _, rest = bus_id.partition(":")
    return f"{domain[-4:]}:{rest}".lower() if rest else bus_id.lower()


@dataclass(frozen=True)
class NvmlProbe:
    """The outcome of trying NVML once: whether it works, what it said, driver and GPU count."""

    ok: bool
    detail: str
    driver_version: str = ""
    gpu_count: int = 0


# One reading: what `gpu list`, `gpu top` and the agent show ----------------------------------------


@dataclass(frozen=True)
class GpuProcessSample:
    """A process NVML says is using a GPU. ``pid`` is in the host's PID namespace."""

    pid: int
    used_memory: int | None  # bytes; None when NVML does not say (no permission, MIG, WDDM)
    type: str = "compute"  # compute, graphics, or compute+graphics


@dataclass(frozen=True)
class GpuSample:
    """One GPU at one moment. Fields NVML cannot give for this GPU are None.

    ``error`` is set when the GPU could not be read at all (fallen off the bus: NVML says "GPU is
    lost"); the identity fields then hold what was read before that, or placeholders.
    """

    index: int
    uuid: str
    pci_bus_id: str
    name: str
    memory_total: int | None
    memory_used: int | None = None
    utilization: int | None = None  # percent of time a kernel ran, over NVML's last sample period
    memory_utilization: int | None = None  # percent of time memory was read or written
    temperature: int | None = None  # degrees C
    power_watts: float | None = None
    power_limit_watts: float | None = None
    mig_enabled: bool | None = None  # None: the GPU has no MIG
    minor_number: int | None = None
    processes: tuple[GpuProcessSample, ...] = ()
    error: str | None = None

    @property
    def pci_address(self) -> str:
        return pci_address(self.pci_bus_id)

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class NvmlReading:
    """Everything one NVML sweep saw. Plain data: it round-trips through JSON (recordings)."""

    driver_version: str
    cuda_version: str  # what the driver supports, e.g. "12.4"; "" when unknown
    gpus: tuple[GpuSample, ...] = field(default_factory=tuple)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> NvmlReading:
        gpus = []
        for g in data.get("gpus") or []:
            procs = tuple(GpuProcessSample(**p) for p in g.get("processes") or [])
            gpus.append(GpuSample(**{**g, "processes": procs}))
        return cls(
            driver_version=str(data.get("driver_version", "")),
            cuda_version=str(data.get("cuda_version", "")),
            gpus=tuple(gpus),
        )


class GpuSource(ABC):
    """Where GPU readings come from. The real one is :class:`NvmlSource`."""

    @abstractmethod
    def read(self) -> NvmlReading:
        """One sweep over every GPU. Raises NvmlUnavailable when NVML cannot be used at all;
        a single broken GPU is reported in its sample's ``error`` instead."""


# NVML itself ------------------------------------------------------------------------------------


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
def nvml_session(pynvml: ModuleType | None = None) -> Iterator[ModuleType]:
    """An initialised NVML for the duration of the block. Raises NvmlUnavailable.

    ``pynvml`` replaces the real module (tests drive the real code with a scripted module)."""
    pynvml = pynvml or _import()
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


class _GpuLost(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# Errors that mean "this GPU is gone or broken", not "this field is not supported".
_BROKEN = ("NVML_ERROR_GPU_IS_LOST", "NVML_ERROR_RESET_REQUIRED", "NVML_ERROR_UNKNOWN", "NVML_ERROR_TIMEOUT")


class NvmlSource(GpuSource):
    """Readings from the real NVML, one session per :meth:`read`.

    Optional fields (temperature, power, utilization, MIG, processes) that a GPU does not support,
    or that this user may not read, come back as None. A GPU that is lost or broken is reported in
    its sample's ``error`` and the other GPUs are still read.
    """

    def __init__(self, pynvml: ModuleType | None = None) -> None:
        self._module = pynvml

    def read(self) -> NvmlReading:
        with nvml_session(self._module) as nvml:
            version = _text(nvml.nvmlSystemGetDriverVersion())
            cuda = self._optional(nvml, nvml.nvmlSystemGetCudaDriverVersion_v2)
            count = int(nvml.nvmlDeviceGetCount())
            gpus = tuple(self._read_gpu(nvml, i) for i in range(count))
        cuda_text = f"{cuda // 1000}.{cuda % 1000 // 10}" if isinstance(cuda, int) and cuda > 0 else ""
        return NvmlReading(driver_version=version, cuda_version=cuda_text, gpus=gpus)

    @staticmethod
    def _optional(nvml: ModuleType, fn: Callable[..., T], *args: Any) -> T | None:
        try:
            return fn(*args)
        except nvml.NVMLError as exc:
            if getattr(exc, "value", None) in {getattr(nvml, n, None) for n in _BROKEN}:
                raise _GpuLost(str(exc)) from None
            return None

    def _read_gpu(self, nvml: ModuleType, index: int) -> GpuSample:
        known: dict[str, Any] = {
            "index": index,
            "uuid": "",
            "pci_bus_id": "",
            "name": "",
            "memory_total": None,
        }
        try:
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            known["uuid"] = _text(nvml.nvmlDeviceGetUUID(handle))
            known["pci_bus_id"] = _text(nvml.nvmlDeviceGetPciInfo(handle).busId)
            known["name"] = _text(nvml.nvmlDeviceGetName(handle))
            memory = nvml.nvmlDeviceGetMemoryInfo(handle)
            known["memory_total"] = int(memory.total)
            opt = self._optional
            util = opt(nvml, nvml.nvmlDeviceGetUtilizationRates, handle)
            temp = opt(nvml, nvml.nvmlDeviceGetTemperature, handle, nvml.NVML_TEMPERATURE_GPU)
            power = opt(nvml, nvml.nvmlDeviceGetPowerUsage, handle)
            limit = opt(nvml, nvml.nvmlDeviceGetEnforcedPowerLimit, handle)
            mig = opt(nvml, nvml.nvmlDeviceGetMigMode, handle)
            minor = opt(nvml, nvml.nvmlDeviceGetMinorNumber, handle)
            compute = opt(nvml, nvml.nvmlDeviceGetComputeRunningProcesses, handle) or []
            graphics = opt(nvml, nvml.nvmlDeviceGetGraphicsRunningProcesses, handle) or []
        except (nvml.NVMLError, _GpuLost) as exc:
            message = exc.message if isinstance(exc, _GpuLost) else str(exc)
            return GpuSample(**known, error=f"cannot read GPU {index}: {message}")
        return GpuSample(
            **known,
            memory_used=int(memory.used),
            utilization=None if util is None else int(util.gpu),
            memory_utilization=None if util is None else int(util.memory),
            temperature=None if temp is None else int(temp),
            power_watts=None if power is None else round(power / 1000, 1),
            power_limit_watts=None if limit is None else round(limit / 1000, 1),
            mig_enabled=None if mig is None else bool(mig[0]),
            minor_number=None if minor is None else int(minor),
            processes=_merge_processes(compute, graphics),
        )


def _merge_processes(compute: list[Any], graphics: list[Any]) -> tuple[GpuProcessSample, ...]:
    """One entry per pid (a process can be in both lists, as nvidia-smi's "C+G")."""
    merged: dict[int, GpuProcessSample] = {}
    for kind, procs in (("compute", compute), ("graphics", graphics)):
        for p in procs:
            pid = int(p.pid)
            used = getattr(p, "usedGpuMemory", None)
            # pynvml turns NVML_VALUE_NOT_AVAILABLE into None; very old releases pass it through.
            used = None if used is None or used >= 2**63 else int(used)
            if pid in merged:
                before = merged[pid]
                total = (
                    None
                    if before.used_memory is None and used is None
                    else max(before.used_memory or 0, used or 0)
                )
                merged[pid] = GpuProcessSample(pid=pid, used_memory=total, type="compute+graphics")
            else:
                merged[pid] = GpuProcessSample(pid=pid, used_memory=used, type=kind)
    return tuple(merged[pid] for pid in sorted(merged))


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
