"""`python -m labgpu.cli`."""

from labgpu.cli.main import main

main()
