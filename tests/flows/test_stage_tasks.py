"""The flow's Prefect tasks take a handle, the work directory, never the stages' arguments.

Prefect walks every parameter of a task call to find upstream tasks, and would serialize them
for caching: a whole plan (options, card, tile plan) or a segment outcome should never be one.
The Prefect server's own record of each task run is the oracle: its ``task_inputs`` name the
parameters the task was called with.
"""

from __future__ import annotations

import asyncio

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.sorting import TaskRunSort

from segpipe.flows.flow import segpipe_run
from tests.flows.conftest import SMALL_ARGS, options_for


async def _task_runs(flow_run_id):
    async with get_client() as client:
        return await client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
            sort=TaskRunSort.EXPECTED_START_TIME_ASC, limit=50,
        )


def test_every_stage_task_is_called_with_the_work_directory_only(prefect_api, assets, tmp_path):
    options = options_for(assets["small"], tmp_path / "labels.tif", assets["model"], SMALL_ARGS)
    state = segpipe_run([str(assets["small"])], [options], return_state=True)
    assert state.is_completed()
    runs = asyncio.run(_task_runs(state.state_details.flow_run_id))
    stages = {run.name.split()[0]: run for run in runs}
    assert set(stages) == {"plan", "ingest", "stats", "segment", "export", "report"}
    for run in runs:
        assert set(run.task_inputs) == {"workdir"}, (run.name, run.task_inputs)
        assert run.task_inputs["workdir"] == []  # a plain value, no upstream task
    assert (tmp_path / "labels.tif").exists()
