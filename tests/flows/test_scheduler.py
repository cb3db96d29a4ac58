"""Prefect's scheduler service works with the pinned dependencies.

Prefect 3.8 with SQLAlchemy 2.1 fails on every scheduler loop ("Can't evaluate bulk DML
statement"), so no scheduled run of ``segpipe serve`` was ever created. This runs the scheduler
service once, on a database of its own, in a subprocess (Prefect reads its home at import), and
counts the flow runs it created from an interval schedule.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import asyncio, datetime
    from prefect.server import models, schemas
    from prefect.server.database import provide_database_interface
    from prefect.server.services.scheduler import schedule_deployments

    async def main():
        db = provide_database_interface()
        await db.create_db()
        every = schemas.schedules.IntervalSchedule(interval=datetime.timedelta(seconds=5))
        async with db.session_context(begin_transaction=True) as session:
            flow = await models.flows.create_flow(
                session=session, flow=schemas.core.Flow(name="f"))
            deployment = schemas.core.Deployment(
                name="d", flow_id=flow.id, paused=False,
                schedules=[schemas.core.DeploymentSchedule(schedule=every, active=True)])
            await models.deployments.create_deployment(session=session, deployment=deployment)
        await schedule_deployments()
        async with db.session_context() as session:
            runs = await models.flow_runs.read_flow_runs(session=session)
        print(len(runs), sorted({r.state_type.value for r in runs}))

    asyncio.run(main())
    """
)


def test_the_scheduler_service_creates_the_runs_of_an_interval_schedule(tmp_path):
    import sqlalchemy

    assert sqlalchemy.__version__.startswith("2.0."), sqlalchemy.__version__
    env = {**os.environ, "PREFECT_HOME": str(tmp_path), "PREFECT_API_URL": "",
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("PREFECT_API_DATABASE_CONNECTION_URL", None)
    done = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                          text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    count, states = done.stdout.split(maxsplit=1)
    # every 5 s for the scheduler's horizon: at least its minimum of 3 runs, all SCHEDULED
    assert int(count) >= 3 and states.strip() == "['SCHEDULED']", done.stdout
