"""What a human-review checkpoint (`executor.human_input.Checkpoint`) must satisfy to be
kept, and to be resumed from: a size it may take in Prefect's run-input store, and the
crew it was made by.

Size. The checkpoint is one row of Prefect's `flow_run_input` table (a TEXT column: no
limit short of a gigabyte in SQLite or Postgres), but it travels whole as one JSON string
inside a JSON request to Prefect's API, and every resumed run reads it whole again. So it
is held to `MAX_CHECKPOINT_BYTES`: first the middle of the reviewed agent's conversation
is dropped (its tool calls and their results: feedback is then read against the task's
prompt and the answer), then the text of the run directory's files, largest first (those
files do not come back on resume, as files too large to list never do). A checkpoint still
over the cap (the finished tasks' outputs themselves) fails the job: `CheckpointTooLarge`.

Crew. A worker redeployed while a job waits may run another definition of the crew: the
checkpoint's task indices and outputs would land on other tasks. The checkpoint keeps a
fingerprint of the crew's tasks (`LoadedCrew.fingerprint`: each task's name, description,
expected output, output file, agent and context, in order, as defined); a resume into a
crew whose tasks differ fails the job (`CrewChanged`) rather than mix the outputs of two
crews, or silently start over (which would redo reviewed work and ask the person again
about a crew the job was not submitted to). Changes that keep the tasks (a tool's code,
a package version) resume as before.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from executor.human_input import Checkpoint

#: The most a checkpoint may take as the JSON Prefect stores (UTF-8 bytes): the run
#: directory's texts (256 KiB at most) and a long conversation fit many times over.
MAX_CHECKPOINT_BYTES = 1024 * 1024
#: Of a trimmed conversation, the first messages kept (the system prompt, the task) and
#: the last (the answer under review).
KEPT_FIRST_MESSAGES = 2
KEPT_LAST_MESSAGES = 1


class JobCannotResume(Exception):
    """The job cannot go on from its checkpoint; no retry can change that."""


class CheckpointTooLarge(JobCannotResume):
    """Even trimmed, the checkpoint is larger than its store takes."""


class CrewChanged(JobCannotResume):
    """The crew the run resumes into is not the one the checkpoint was made by."""


class CheckpointConflict(JobCannotResume):
    """A question id already answered is being asked again for another checkpoint."""


def checkpoint_bytes(data: Any) -> int:
    """How many bytes `data` takes as the JSON Prefect's client stores (compact UTF-8)."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), default=str)
    return len(text.encode())


def fitted_checkpoint(checkpoint: Checkpoint, limit: int = MAX_CHECKPOINT_BYTES) -> Checkpoint:
    """The checkpoint within `limit`: trimmed as the module says (what was trimmed is
    recorded in `trimmed`), or CheckpointTooLarge."""
    if checkpoint_bytes(checkpoint.to_json()) <= limit:
        return checkpoint
    trimmed: dict[str, Any] = {}
    pending = checkpoint.pending
    messages = list((pending or {}).get("messages") or [])
    if pending is not None and len(messages) > KEPT_FIRST_MESSAGES + KEPT_LAST_MESSAGES:
        kept = messages[:KEPT_FIRST_MESSAGES] + messages[-KEPT_LAST_MESSAGES:]
        trimmed["messages_dropped"] = len(messages) - len(kept)
        checkpoint = replace(checkpoint, pending={**pending, "messages": kept},
                             trimmed=trimmed)  # fmt: skip
    files = [dict(entry) for entry in checkpoint.files]
    by_size = sorted((i for i, f in enumerate(files) if "text" in f),
                     key=lambda i: -len(str(files[i]["text"])))  # fmt: skip
    dropped: list[str] = []
    for index in by_size:
        if checkpoint_bytes(checkpoint.to_json()) <= limit:
            break
        files[index].pop("text")
        dropped.append(str(files[index].get("name")))
        trimmed["file_texts_dropped"] = dropped
        checkpoint = replace(checkpoint, files=tuple(files), trimmed=trimmed)
    size = checkpoint_bytes(checkpoint.to_json())
    if size > limit:
        raise CheckpointTooLarge(
            f"the crew's checkpoint for question {checkpoint.question} takes {size} bytes "
            f"even trimmed, over the {limit} a suspended job may keep (the finished tasks' "
            "outputs and the answer under review must fit)"
        )
    return checkpoint


def check_same_crew(checkpoint: Checkpoint, crew: Mapping[str, Any]) -> None:
    """CrewChanged unless the checkpoint was made by this crew (`{"fingerprint",
    "version"}`). A checkpoint without a fingerprint (made before they were kept) or an
    empty one (nothing done yet) is not checked."""
    made_by = checkpoint.crew or {}
    if not made_by.get("fingerprint") or not (checkpoint.completed or checkpoint.pending):
        return
    if made_by["fingerprint"] != crew.get("fingerprint"):
        raise CrewChanged(
            f"the crew's tasks changed while the job waited (checkpoint made by version "
            f"{made_by.get('version')!r}, this worker runs {crew.get('version')!r}): its "
            "checkpoint cannot be resumed; submit the job again"
        )
