"""The executor: Prefect flows that run CrewAI crews on worker machines.

Telemetry is off unless the deployment turns it on: workers often have no outbound
network beyond Prefect and the LLM, and CrewAI's telemetry would otherwise try it.
"""

import os

for _name, _value in {
    "CREWAI_DISABLE_TELEMETRY": "true",
    "OTEL_SDK_DISABLED": "true",
    "DO_NOT_TRACK": "1",
}.items():
    os.environ.setdefault(_name, _value)
