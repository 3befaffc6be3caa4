"""kvmtop's benchmarks (`python -m bench`; see bench/__main__.py).

Every bench measures kvmtop as its entry point runs it, so the garbage collector
gets the thresholds `kvmtop.commands.main.main` sets (`kvmtop.wiring.tune_gc`) before any
bench module builds anything.
"""

from kvmtop.wiring import tune_gc

tune_gc()
