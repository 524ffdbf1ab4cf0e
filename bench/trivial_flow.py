"""The baseline for bench/jobs.py: a flow that does nothing, run by a plain process worker."""

from prefect import flow


@flow(name="trivial")
def trivial() -> int:
    return 1
