"""`python -m kvmtop` entry point."""

from kvmtop.cli import main

raise SystemExit(main())
