"""The settings of members' own templates (a member saves their container as a template of their own, then
resets to it), declared beside each other so that "what does this setting affect" needs no grep.
:class:`Settings` (``labgpu.settings``) takes them in as they are: ``member_template_quota`` is
``LABGPU_MEMBER_TEMPLATE_QUOTA``. Used by ``services/members/_my_templates.py``."""

from __future__ import annotations

from pydantic import BaseModel, Field


class MyTemplateSettings(BaseModel):
    """Members' own templates: how many, and how large in all; see docs/admin/templates.md, "Members' own
    templates"."""

    member_template_quota: int = Field(
        2,
        ge=0,
        description="How many templates of their own (images published from a snapshot of their container) "
        "one member may keep; saving one more is refused until they delete one. The same for everybody, admins "
        "saving for a member included. 0: nobody can save one.",
    )
    member_template_quota_gib: float = Field(
        20,
        ge=0,
        description="The most one member's own templates may take in all, in GiB (compressed image size, as "
        "`lxc image list` shows it). A save that would go past it is refused and its image deleted. "
        "0: no size limit.",
    )
