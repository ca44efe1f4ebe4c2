"""labgpu: self-service GPU containers for research labs, on LXD or Incus."""

__version__ = "0.1.0"
