"""notify: notifications on every channel a person chose, queued in the store and retried.

Channels are Apprise URLs (WeCom, DingTalk, Feishu/Lark, Slack, Telegram, mail, generic JSON/form
webhooks): the lab's in the ``notify_urls`` setting (for the admins), each member's own on the portal.
Mail to a person's account address stays the default channel wherever SMTP is configured.

The one way to notify anybody is :func:`send`::

    notify.send(svc, notify.LIMIT_REACHED, ["alice", notify.ADMINS], subject, body, key="limit:alice:2026-W49")

It returns at once: deliveries are queued (one row per channel), sent by a background thread, and
retried with backoff by the job runner's ``notify`` job. A failing channel never blocks or fails the
action that caused the message. Features above this one (gpus, portal, ops, members) call it;
it uses only the store, the settings and mail.
"""

from labgpu.services.notify._channels import (
    MAX_CHANNELS_PER_MEMBER,
    ChannelInfo,
    LabChannel,
    add_channel,
    check_member_url,
    lab_channels,
    list_channels,
    remove_channel,
)
from labgpu.services.notify._checks import (
    ChannelCheck,
    check_channel,
    check_lab_channels,
    check_member_channels,
)
from labgpu.services.notify._kinds import (
    APPLICATION,
    APPROVAL,
    BOOKING_END,
    BOOKING_REMINDER,
    BOOKING_START,
    CONTAINER,
    GPU_FREE,
    IDLE_GPU,
    KINDS,
    LIMIT_REACHED,
    TEST,
    WEEKLY_REPORT,
    check_kinds,
)
from labgpu.services.notify._queue import (
    ADMINS,
    Attempt,
    DeliveryInfo,
    DeliveryReport,
    deliver_due,
    list_deliveries,
    prune_deliveries,
    retry_wait,
    send,
    wait_for_deliveries,
)
from labgpu.services.notify._transport import mask_url

__all__ = [
    "ADMINS",
    "APPLICATION",
    "APPROVAL",
    "BOOKING_END",
    "BOOKING_REMINDER",
    "BOOKING_START",
    "CONTAINER",
    "GPU_FREE",
    "IDLE_GPU",
    "KINDS",
    "LIMIT_REACHED",
    "MAX_CHANNELS_PER_MEMBER",
    "TEST",
    "WEEKLY_REPORT",
    "Attempt",
    "ChannelCheck",
    "ChannelInfo",
    "DeliveryInfo",
    "DeliveryReport",
    "LabChannel",
    "add_channel",
    "check_channel",
    "check_kinds",
    "check_lab_channels",
    "check_member_channels",
    "check_member_url",
    "deliver_due",
    "lab_channels",
    "list_channels",
    "list_deliveries",
    "mask_url",
    "prune_deliveries",
    "remove_channel",
    "retry_wait",
    "send",
    "wait_for_deliveries",
]
