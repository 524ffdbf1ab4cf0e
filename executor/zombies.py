"""Mark flow runs `Crashed` when their heartbeats stop (a killed worker, a lost machine).

Self-hosted Prefect needs this automation created once (Prefect Cloud offers a managed
one, "Unresponsive run detection"). Workers must send heartbeats:
PREFECT_FLOWS_HEARTBEAT_FREQUENCY=30 (Prefect's minimum). The edge's reconciler then sees
CRASHED and ends the job as failed, firing the client's webhook.

    PREFECT_API_URL=... python -m executor.zombies [--within 90]
"""

from __future__ import annotations

import argparse
from datetime import timedelta
from typing import cast

NAME = "edgecrew: crash silent flow runs"


def ensure_zombie_automation(within_seconds: int = 90) -> str:
    """Create the automation, or bring the one of that name up to date; returns its id."""
    from prefect.automations import Automation
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import EventTrigger, Posture
    from prefect.events.schemas.events import ResourceSpecification

    wanted = Automation(
        name=NAME,
        trigger=EventTrigger(
            # Armed by Running too: a worker killed before its first heartbeat is caught.
            after={"prefect.flow-run.Running", "prefect.flow-run.heartbeat"},
            expect={
                "prefect.flow-run.heartbeat",
                # A run suspended for a person's answer has no process left to beat: it
                # is waiting, not dead (it arms the trigger again once resumed).
                "prefect.flow-run.Suspended",
                "prefect.flow-run.Paused",
                "prefect.flow-run.Completed",
                "prefect.flow-run.Failed",
                "prefect.flow-run.Cancelled",
                "prefect.flow-run.Crashed",
            },
            match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=within_seconds),
        ),
        actions=[
            ChangeFlowRunState(
                name=None,
                force=False,
                state=StateType.CRASHED,
                message=f"No heartbeat for {within_seconds} s: the worker or its machine died",
            )
        ],
    )
    try:
        # Prefect's sync/async dual methods are typed as either; called sync here.
        existing = cast(Automation, Automation.read(name=NAME))
    except ValueError:  # not there yet
        return str(cast(Automation, wanted.create()).id)
    shape = [(getattr(t, "expect", None), getattr(t, "within", None))
             for t in (existing.trigger, wanted.trigger)]  # fmt: skip
    if shape[0] != shape[1]:  # made by an older edgecrew (which crashed suspended runs)
        existing.trigger = wanted.trigger
        existing.update()
    return str(existing.id)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--within", type=int, default=90)
    print(ensure_zombie_automation(parser.parse_args().within))
