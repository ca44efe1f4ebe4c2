"""Members' own templates: their aliases cannot be taken for a lab template's, and labels are checked."""

from __future__ import annotations

import pytest

from labgpu.errors import BadInput
from labgpu.services.members._my_templates import is_member_template, template_alias, validate_label
from labgpu.services.templates._catalog import parse_ref


def test_a_members_alias_is_never_a_lab_templates() -> None:
    alias = template_alias("alice", "cuda12")
    assert alias == "member/alice/cuda12" and is_member_template(alias)
    # A lab template is NAME or NAME/VERSION (no slash in a version): never three parts.
    with pytest.raises(BadInput):
        parse_ref(alias)
    for lab in ("member", "member/20261203-1", "ubuntu-cuda", "ubuntu-cuda/20261203-2", "", None):
        assert not is_member_template(lab)
    for odd in ("member/alice/../x", "member//x", "member/alice/", "member/a/b/c", "members/alice/x"):
        assert not is_member_template(odd)


@pytest.mark.parametrize("label", ["cuda12", "a", "torch-2.4_cu121", "x" * 40])
def test_good_labels(label: str) -> None:
    assert validate_label(label) == label


@pytest.mark.parametrize("label", ["", "Cuda", "-x", ".x", "a b", "a/b", "x\n", "x\x00", "x" * 41, "ü"])
def test_bad_labels_are_refused_with_the_rule(label: str) -> None:
    with pytest.raises(BadInput, match="lower-case letters"):
        validate_label(label)
