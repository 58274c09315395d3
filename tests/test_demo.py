"""`make demo` end to end, small: jobs complete on provisioned cloud nodes, nodes retire."""

import re
import subprocess
import sys

import pytest

from condor_plugins.localpool import processes_using, wait_for

pytestmark = pytest.mark.integration


def test_demo_small_burst():
    res = subprocess.run([sys.executable, "-m", "condor_plugins.demo", "--jobs", "6",
                          "--max-nodes", "2", "--job-seconds", "3", "--idle-timeout", "5",
                          "--timeout", "240"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    assert "jobs completed       : 6/6, 6 of them on cloud nodes" in res.stdout
    assert "RESULT: OK" in res.stdout
    # Everything was killed (SIGKILL); under load the kernel may take a moment
    # to end the last of them, but none may outlive that. Only this demo's own
    # directory: other tests run the demo's world (cp-demo-*) at the same time.
    base = re.search(r"demo directory: (/tmp/cp-demo-\S+)", res.stdout).group(1)
    wait_for(lambda: processes_using(base + "/") == [], 30, interval=0.5,
             what="every process of the demo gone")
