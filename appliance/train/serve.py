"""Which model ``appliance serve JOB|MODEL`` means: a catalog model id, or a job's registered output.

Serving itself is a deploy (:func:`appliance.deploy.requests.serve`): the model joins the site
configuration's served models and the one pipeline brings it up beside what runs.
"""

from __future__ import annotations

from appliance.errors import UsageError
from appliance.state.store import StateStore


def resolve_model(ref: str, store: StateStore, instance: str, catalog) -> str:
    """A job id (its registered output) or a catalog model id."""
    from appliance.train import store as S

    if ref in catalog.models:
        return ref
    job = S.get(S.open_store(store), ref, instance)
    if job is not None:
        if not job.registered:
            raise UsageError(f"job {ref} is {job.status} and has no registered output", where=f"job {ref}",
                             fix="wait until it completes (appliance train status " + ref + ")")
        if job.output_model not in catalog.models:
            raise UsageError(f"the output model {job.output_model} of job {ref} is no longer in the catalog",
                             where=f"job {ref}", fix="re-run the job")
        return job.output_model
    from appliance.catalog.loader import unknown_name_error

    raise unknown_name_error("model or job", ref, list(catalog.models), where="serve")
