"""system: the only code that changes the host's own operating system.

runtime/ wraps the LXD/Incus daemons; this package wraps the rest of the host: the login gateway's
accounts (``accounts``), sshd and sudoers drop-ins (``sshd``, ``sudoers``), files written in place
(``files``), commands run with argument lists (``commands``), systemd units (``systemd``), kernel limits
(``sysctl``) and the offline image builder (``base_image``, ``rootfs``). The use cases that decide what to
do live in services/ and call these modules; nothing here imports services/, cli/ or web/.
"""
