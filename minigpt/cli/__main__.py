"""``python -m minigpt.cli``: the ``minigpt`` console command."""

from minigpt.cli.main import main

if __name__ == "__main__":
    raise SystemExit(main())
