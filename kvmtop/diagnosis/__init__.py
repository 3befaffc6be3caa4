"""`kvmtop doctor`'s examination of this host: which sources work, why not, and what
to change (the command: `kvmtop.commands.doctor`)."""
