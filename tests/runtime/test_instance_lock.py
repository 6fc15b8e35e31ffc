"""The per-instance operation locks (appliance.state.locks) the runtime, training and bundles use."""

from __future__ import annotations

import subprocess
import sys

from appliance.runtime.stack import instance_lock
from appliance.state import locks
from appliance.train.store import job_lock


def test_a_held_lock_is_busy_for_others_and_only_in_its_own_domain(tmp_path):
    with instance_lock("inst-a") as held:
        assert held and locks.lock_path("runtime", "inst-a").is_file()
        with instance_lock("inst-a", wait=False) as again:
            assert again is False                              # busy: answered at once, nothing held
        with instance_lock("inst-b", wait=False) as other, job_lock("inst-a", wait=False) as job:
            assert other and job                               # other instance, other domain: free
    with instance_lock("inst-a", wait=False) as free:
        assert free


def test_the_lock_goes_with_a_killed_holder():
    # the holder sleeps on purpose: it keeps the lock until the test kills it (nothing to wait for)
    holder = subprocess.Popen([sys.executable, "-c",
                               "import sys, time\nfrom appliance.state import locks\n"
                               "with locks.instance_lock('train', 'inst-k'):\n"
                               "    print('held', flush=True); time.sleep(60)\n"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with job_lock("inst-k", wait=False) as busy:
            assert busy is False
    finally:
        holder.kill()
        holder.wait()
    with job_lock("inst-k", wait=False) as free:
        assert free
