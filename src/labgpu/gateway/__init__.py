"""The login gateway's two small programs: labgpu-login (the member's side) and gateway-exec (root's side).

Both use the standard library only and import nothing from the rest of labgpu: `labgpu host gateway
enable` installs each as a stand-alone script (see :mod:`labgpu.services.hosts._gateway`; the host
accounts, sshd and sudoers files themselves are written by :mod:`labgpu.system`).
"""
