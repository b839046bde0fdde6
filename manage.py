#!/usr/bin/env python
import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "streamsite.settings")
    from django.core.management import execute_from_command_line

    from streamsite.startup import settings_or_exit

    settings_or_exit()  # a bad or missing variable: one line naming it, exit 2

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
