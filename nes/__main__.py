"""`python -m nes` is the `nes` command."""

from nes.cli import main

raise SystemExit(main())
