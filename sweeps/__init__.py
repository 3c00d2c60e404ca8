"""The parts of `sweep.py`: what to run, who runs it, and how.

plan.py      the runs of a sweep and the exact command of each
claims.py    marker files that stop two sweeps (or SLURM jobs) from running the same run at once
runner.py    one run from claim to results line, with retries: the job both launchers execute
local.py     the local launcher: up to --jobs runs at once, each on its own GPU(s)
slurm.py     the SLURM launcher: the missing runs as one submitit job array
progress.py  the live progress line
"""
