"""``python -m metabook_learn ...``: the command line (see ``metabook_learn.cli``)."""
from metabook_learn.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
