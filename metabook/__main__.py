"""``python -m metabook ...``: the command line (see ``metabook.cli``)."""
from metabook.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
