"""Reading a template spec: YAML with the line of every key, validated by the models in ``_spec``, and
every problem reported as ``FILE:LINE: message`` (an unknown key with a "did you mean" when one is close)."""

from __future__ import annotations

import difflib
import hashlib
import json
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    BaseModel,
    ValidationError,
)

from labgpu.errors import BadInput
from labgpu.services.templates._spec import (
    ScriptCommand,
    SpecError,
    TemplateSpec,
)

Path_ = tuple[str | int, ...]


@dataclass(frozen=True)
class LoadedSpec:
    """A validated spec, with where it came from (relative paths in it are relative to ``spec_dir``)."""

    spec: TemplateSpec
    source: str
    spec_dir: Path
    text: str

    def local_files(self) -> list[Path]:
        """Every file on the host the spec refers to (scripts, files, a local Miniconda installer)."""
        found = [self.spec_dir / f.src for f in self.spec.files]
        found += [self.spec_dir / c.script for c in self.spec.commands if isinstance(c, ScriptCommand)]
        if self.spec.miniconda is not None and not self.spec.miniconda.is_url:
            found.append(self.spec_dir / self.spec.miniconda.installer)
        return found

    def spec_hash(self) -> str:
        """A hash of what the spec says and of every local file it uses (not of comments or layout)."""
        digest = hashlib.sha256()
        digest.update(json.dumps(self.spec.model_dump(mode="json"), sort_keys=True).encode())
        for path in self.local_files():
            digest.update(
                str(path.relative_to(self.spec_dir) if path.is_relative_to(self.spec_dir) else path).encode()
            )
            with path.open("rb") as f:
                while chunk := f.read(1 << 20):
                    digest.update(chunk)
        return digest.hexdigest()[:16]


def load_spec(path: Path) -> LoadedSpec:
    """Read and validate a spec file. Raises SpecError naming the line of each problem, BadInput when
    the file cannot be read. Does nothing else (no daemon, no network)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BadInput(f"spec file {path} does not exist") from None
    except IsADirectoryError:
        raise BadInput(f"{path} is a folder, not a spec file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"cannot read spec file {path}: {exc}") from None
    return parse_spec(text, source=str(path), spec_dir=path.resolve().parent)


def parse_spec(text: str, *, source: str = "<spec>", spec_dir: Path | None = None) -> LoadedSpec:
    """Validate spec text. ``spec_dir`` is where relative paths point; None skips the checks that the
    files exist. Raises SpecError."""
    data, lines = _compose(text, source)
    if not isinstance(data, dict):
        raise SpecError(source, [(1, "a spec is a mapping of keys (name:, base:, ...), not a single value")])
    try:
        spec = TemplateSpec.model_validate(data, context={"spec_dir": spec_dir})
    except ValidationError as exc:
        raise SpecError(source, _problems(exc, data, lines)) from None
    return LoadedSpec(spec=spec, source=source, spec_dir=spec_dir or Path.cwd(), text=text)


def _compose(text: str, source: str) -> tuple[Any, dict[Path_, int]]:
    """Parse YAML into plain data, and the (1-based) line of every key and list item by its path."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        raise SpecError(source, [(line, f"not valid YAML: {exc.problem or exc}")]) from None
    except yaml.YAMLError as exc:
        raise SpecError(source, [(1, f"not valid YAML: {exc}")]) from None
    lines: dict[Path_, int] = {(): 1}
    problems: list[tuple[int, str]] = []
    if root is None:
        raise SpecError(source, [(1, "the spec is empty")])
    constructor = yaml.constructor.SafeConstructor()

    def build(node: yaml.Node, path: Path_) -> Any:
        if isinstance(node, yaml.MappingNode):
            out: dict[str, Any] = {}
            for key_node, value_node in node.value:
                line = key_node.start_mark.line + 1
                key = (
                    constructor.construct_object(key_node) if isinstance(key_node, yaml.ScalarNode) else None
                )
                if not isinstance(key, str):
                    problems.append((line, f"{_dotted(path) or 'the spec'}: keys must be words, not {key!r}"))
                    continue
                if key in out:
                    problems.append((line, f"key {_dotted((*path, key))!r} is given twice"))
                    continue
                lines[(*path, key)] = line
                out[key] = build(value_node, (*path, key))
            return out
        if isinstance(node, yaml.SequenceNode):
            items = []
            for index, item in enumerate(node.value):
                lines[(*path, index)] = item.start_mark.line + 1
                items.append(build(item, (*path, index)))
            return items
        return constructor.construct_object(node, deep=True)

    data = build(root, ())
    if problems:
        raise SpecError(source, problems)
    return data, lines


def _walk(loc: tuple[int | str, ...], data: Any) -> tuple[Path_, bool]:
    """The data path a pydantic error location points at, skipping union tags; and whether the last
    key is absent from the data (a missing key)."""
    path: list[str | int] = []
    node = data
    for i, part in enumerate(loc):
        last = i == len(loc) - 1
        if isinstance(node, dict) and isinstance(part, str):
            if part in node:
                path.append(part)
                node = node[part]
                continue
            if last:
                path.append(part)
                return tuple(path), True
            continue  # a union member's tag
        if isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            path.append(part)
            node = node[part]
        # anything else is a union member's tag (or a scalar's own check): nothing to follow
    return tuple(path), False


def _line(path: Path_, lines: dict[Path_, int]) -> int:
    while path not in lines:
        path = path[:-1]
    return lines[path]


def _dotted(path: Path_) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def _yaml_kind(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return f"a number ({value})"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


_TYPE_WORDS = {
    "string_type": "a string",
    "int_type": "a whole number",
    "int_from_float": "a whole number",
    "bool_type": "true or false",
    "list_type": "a list",
    "dict_type": "a mapping (key: value)",
    "model_type": "a mapping (key: value)",
    "model_attributes_type": "a mapping (key: value)",
}


def _problems(exc: ValidationError, data: Any, lines: dict[Path_, int]) -> list[tuple[int, str]]:
    problems: dict[tuple[int, str], None] = {}  # ordered, without repeats
    for error in exc.errors():
        path, missing = _walk(tuple(error["loc"]), data)
        kind = error["type"]
        where = _dotted(path)
        if kind == "extra_forbidden":
            line = _line(path, lines)
            key = str(path[-1])
            parent = _dotted(path[:-1])
            allowed = _allowed_keys(path[:-1])
            close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
            advice = f"did you mean {close[0]!r}?" if close else "allowed: " + ", ".join(allowed)
            text = f"unknown key {key!r}{' in ' + parent if parent else ''} ({advice})"
        elif kind == "missing" or missing:
            line = _line(path[:-1], lines)
            parent = _dotted(path[:-1])
            text = f"missing key {str(path[-1])!r}{' in ' + parent if parent else ''}"
        else:
            line = _line(path, lines)
            if kind in _TYPE_WORDS:
                text = f"should be {_TYPE_WORDS[kind]}, not {_yaml_kind(error['input'])}"
            elif kind in ("value_error", "assertion_error"):
                text = str(error.get("ctx", {}).get("error", error["msg"]))
            elif kind == "too_short":
                text = "must not be empty"
            else:
                msg = str(error["msg"])
                text = msg[0].lower() + msg[1:] if msg.startswith("Input") else msg
                text = text.replace("input should be", "should be")
            text = f"{where}: {text}" if where else text
        problems[(line, text)] = None
    return list(problems)


def _allowed_keys(path: Path_) -> list[str]:
    """The keys the model at ``path`` accepts (for "did you mean")."""
    model: type[BaseModel] | None = TemplateSpec
    for part in path:
        if isinstance(part, int):
            continue  # a list item: the list's model
        if model is None or part not in model.model_fields:
            return []
        model = _model_in(model.model_fields[part].annotation)
    return sorted(model.model_fields) if model is not None else []


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The first pydantic model inside a type annotation (Optional, list, Annotated, Union)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    if isinstance(annotation, types.UnionType):
        for arg in annotation.__args__:
            found = _model_in(arg)
            if found is not None:
                return found
    return None
