"""Executing runs: `bench.execute.unit.execute` trains one run of the grid; executors (local, processes, slurm)
call it for the runs the plan (bench/plan.py) says are not done."""
