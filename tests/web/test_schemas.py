"""API answers derived from the services' dataclasses: one definition of each entity."""

from __future__ import annotations

import dataclasses
from typing import Literal

import pytest
from pydantic import BaseModel, ValidationError

from labgpu.services import members, portal
from labgpu.web import schemas
from labgpu.web.schemas import fields_of


@pytest.mark.parametrize(
    ("schema", "entity"),
    [
        (schemas.MemberOut, members.MemberInfo),
        (schemas.ContainerOut, members.ContainerRow),
        (schemas.HostOut, members.HostRow),
        (schemas.SnapshotOut, members.SnapshotInfo),
        (schemas.ChangeOut, members.Change),
        (schemas.RemovalOut, members.Removal),
        (schemas.ApplicationOut, portal.ApplicationInfo),
        (schemas.AccountOut, portal.AccountInfo),
        (schemas.AuditOut, portal.AuditEntry),
    ],
)
def test_an_answer_has_exactly_the_fields_of_its_entity(schema: type[BaseModel], entity: type) -> None:
    assert list(schema.model_fields) == [f.name for f in dataclasses.fields(entity)]


def test_a_field_added_to_the_entity_is_in_the_schema_and_a_narrowed_type_is_enforced() -> None:
    @dataclasses.dataclass
    class Thing:
        name: str
        kind: str
        added: int = 0

    class ThingOut(BaseModel):
        __annotations__ = fields_of(Thing, {"kind": "what it is"}, {"kind": Literal["a", "b"]})

    assert list(ThingOut.model_fields) == ["name", "kind", "added"]
    assert ThingOut.model_json_schema()["properties"]["kind"]["description"] == "what it is"
    assert ThingOut.model_validate(dataclasses.asdict(Thing("x", "a", 3))).added == 3
    with pytest.raises(ValidationError):
        ThingOut.model_validate(dataclasses.asdict(Thing("x", "c")))


def test_describing_a_field_the_entity_does_not_have_is_refused() -> None:
    @dataclasses.dataclass
    class Thing:
        name: str

    with pytest.raises(TypeError, match="no field"):
        fields_of(Thing, {"gone": "a field removed from the entity"})
