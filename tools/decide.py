"""Command-line entry: same as `ernie-marketing decide`."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ernie_marketing.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["decide", *sys.argv[1:]]))
