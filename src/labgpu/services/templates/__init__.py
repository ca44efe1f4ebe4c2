"""templates: what a member's container is made from.

Declarative template specs (``load_spec``), their steps, builds into images (``build_template``), the
catalog of built templates and their versions. The public face of ``services/templates``: cli/, web/ and
the other features import only this module; the offline base image itself is built by
``labgpu.system.base_image``.
"""

from __future__ import annotations

from labgpu.services.templates._build import build_template
from labgpu.services.templates._build_report import BuildReporter, TemplateBuildError
from labgpu.services.templates._catalog import (
    bootstrap_template,
    catalog,
    export_template,
    import_template,
    remove_template,
)
from labgpu.services.templates._spec import SpecError
from labgpu.services.templates._spec_loading import LoadedSpec, load_spec
from labgpu.services.templates._steps import guess_os_release, plan_steps

__all__ = [
    "BuildReporter",
    "LoadedSpec",
    "SpecError",
    "TemplateBuildError",
    "bootstrap_template",
    "build_template",
    "catalog",
    "export_template",
    "guess_os_release",
    "import_template",
    "load_spec",
    "plan_steps",
    "remove_template",
]
