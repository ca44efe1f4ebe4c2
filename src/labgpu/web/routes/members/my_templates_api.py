"""Members' own templates in the API under /api/v1: list, save from a snapshot, delete (the owner or an
admin; anyone else gets 404), and every member's for admins.

Included before the members' API: ``/members/{name}/templates`` must not be taken for the power route
``/members/{name}/{action}``."""

from __future__ import annotations

from fastapi import APIRouter, Response

from labgpu.services import members
from labgpu.web.deps import AdminRequired, ServicesDep, VisibleMember
from labgpu.web.schemas import ERROR_RESPONSES, MyTemplateCreate, MyTemplateOut

router = APIRouter(prefix="/api/v1", tags=["members"], responses=ERROR_RESPONSES)


@router.get("/members/{name}/templates", response_model=list[MyTemplateOut])
def list_my_templates(name: VisibleMember, svc: ServicesDep) -> list[MyTemplateOut]:
    """The member's own templates, oldest first: reset to one with its alias as the reset's template."""
    return [MyTemplateOut.model_validate(t.as_dict()) for t in members.list_my_templates(svc, name)]


@router.post("/members/{name}/templates", response_model=MyTemplateOut, status_code=201)
def save_my_template(name: VisibleMember, body: MyTemplateCreate, svc: ServicesDep) -> MyTemplateOut:
    """Save the container as one of the member's own templates: a snapshot (or one taken now) published as
    a private image member/NAME/LABEL. Only the root filesystem: never the home folder. Checks the quotas
    first (409 when reached). Waits for the publish: minutes for a large container."""
    saved = members.save_my_template(
        svc, name, body.label, snapshot=body.snapshot or None, description=body.description
    )
    return MyTemplateOut.model_validate(saved.as_dict())


@router.delete(
    "/members/{name}/templates/{label}", status_code=204, responses={204: {"description": "Deleted"}}
)
def remove_my_template(name: VisibleMember, label: str, svc: ServicesDep) -> Response:
    """Delete one of the member's own templates (its image). A container made from it keeps running; a reset
    then uses the lab's default template."""
    members.remove_my_template(svc, name, label[:64])
    return Response(status_code=204)


@router.get("/member-templates", response_model=list[MyTemplateOut])
def list_all_member_templates(_: AdminRequired, svc: ServicesDep) -> list[MyTemplateOut]:
    """Every member's own templates. Admins only."""
    return [MyTemplateOut.model_validate(t.as_dict()) for t in members.list_my_templates(svc)]
