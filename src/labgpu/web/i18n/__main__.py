"""``python -m labgpu.web.i18n extract|update|compile|check``: maintain the portal's catalogs."""

from __future__ import annotations

import sys

from labgpu.web.i18n import catalog


def main(argv: list[str]) -> int:
    command = argv[0] if argv else ""
    if command == "extract":
        template = catalog.write_template()
        print(f"{catalog.TEMPLATE_FILE}: {len(template)} strings")
    elif command == "update":
        catalog.update()
        print("catalogs updated; translate the new entries, then run: python -m labgpu.web.i18n compile")
    elif command == "compile":
        for path in catalog.compile_all():
            print(f"wrote {path}")
    elif command == "check":
        problems = catalog.problems()
        for line in problems:
            print(line)
        return 1 if problems else 0
    else:
        print(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
