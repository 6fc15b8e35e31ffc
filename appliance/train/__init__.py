"""Fine-tuning jobs on the box: ``appliance train`` and ``appliance serve``.

Library entry points (the CLI in :mod:`appliance.cli.train_cmd` is a thin layer over them):

- :func:`appliance.train.dataset.validate_dataset` -- every record of a JSONL dataset (chat
  or instruction format), one-line error naming file and line;
- :func:`appliance.train.jobs.submit_job` -- validate, pick recipe/image/memory from the
  catalog (:mod:`appliance.planner.training`), schedule on free devices
  (:mod:`appliance.train.schedule`; contention with inference is refused unless
  ``preempt``), start the job container;
- :func:`appliance.train.jobs.list_jobs`, ``job_status``, ``job_logs``, ``cancel_job``;
- :func:`appliance.train.supervise.reconcile_jobs` -- one supervision pass (the agent calls
  it every interval): progress from the logs, endings, registration of the output
  (:mod:`appliance.train.register`, local catalog overlay), restoring preempted services;
- :func:`appliance.train.serve.resolve_model` -- the model a job id or model id means (serving it
  is a deploy: :func:`appliance.deploy.requests.serve`).

Job records live in the state (``train_jobs``, :mod:`appliance.train.store`); job
containers carry ``appliance.managed``, ``appliance.instance`` and ``appliance.job=<id>``.
User guide: ``docs/training.md``.
"""

from __future__ import annotations
