"""`python -m kvmtop` entry point."""

from kvmtop.commands.main import main

raise SystemExit(main())
