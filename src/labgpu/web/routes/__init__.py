"""The portal's routes, by feature: the same names as ``labgpu.services`` and ``labgpu.cli``.

Each feature has its JSON API under ``/api/v1`` (``api.py``, or ``api`` in a one-module feature) and its
HTML pages; ``labgpu member ...``, ``/api/v1/members/...`` and the member pages all lead to ``members``:

- ``members``: members and their containers (``api``), my container (``me``), the admin's member, container
  and share pages (``admin``);
- ``portal``: log-in and language (``auth``), applying (``apply``), my account and tokens (``account``),
  the applications queue and the audit log (``admin``), their API (``api``);
- ``gpus``: GPUs and bookings (``api``, ``pages``);
- ``hosts``, ``templates``: the admin's lists; ``ops``: ``/healthz``.
"""
