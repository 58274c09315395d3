"""A real burst on the ``local`` provider, measured: the reference an honesty
check compares a simulator's replay against (``run_real_burst``).

The world of ``make demo`` (``condor_plugins.demo.Demo``). Times are epochs.
Exact ones come from the provisioner's state file (each record's ``created``,
each phase's ``since``: its cycle's clock) and each node's ``instance.json``
(``launch_time``); the collector and the provider listing are polled every
``POLL`` s (``poll_max_gap``: how fine it really was).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import time
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace

from condor_plugins import config as cfgmod
from condor_plugins.demo import ENTRY, Demo
from condor_plugins.localpool import processes_using

POLL = 0.2
#: Pool knobs that set the pace of matching, job starts and ad updates (localpool.py).
POOL_TIMING = tuple("NEGOTIATOR_INTERVAL NEGOTIATOR_MIN_INTERVAL NEGOTIATOR_CYCLE_DELAY "
                    "UPDATE_INTERVAL MASTER_UPDATE_INTERVAL SCHEDD_INTERVAL SCHEDD_MIN_INTERVAL "
                    "STARTER_UPDATE_INTERVAL SHADOW_QUEUE_UPDATE_INTERVAL PERIODIC_EXPR_INTERVAL "
                    "JOB_START_DELAY JOB_START_COUNT CLAIM_WORKLIFE".split())
#: A node's own knobs that affect when it joins, serves and leaves.
NODE_TIMING = tuple("UPDATE_INTERVAL NUM_CPUS MEMORY CLAIM_WORKLIFE CLOUD_PLUGINS_IDLE_SHUTDOWN "
                    "CLOUD_PLUGINS_SHUTDOWN_GRACE CLOUD_PLUGINS_CONTROL_PERIOD "
                    "CLOUD_PLUGINS_LEASE CLOUD_PLUGINS_MAX_RETIRE_TIME".split())
HISTORY_ATTRS = ("ClusterId", "ProcId", "QDate", "JobStartDate", "JobCurrentStartDate",
                 "CompletionDate", "EnteredCurrentStatus", "RemoteWallClockTime", "RequestCpus",
                 "RequestMemory", "RequestDisk", "JobStatus", "ExitCode", "LastRemoteHost",
                 "CloudMode", "Requirements", "NumJobStarts")
#: The provisioner's action lines, logged when done (1 s resolution).
LOG_EVENT = re.compile(r"^(\d\d/\d\d/\d\d \d\d:\d\d:\d\d) (Created|Draining|Terminated) (\S+?),? ")


def config_env(config: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("_CONDOR_")}
    env["CONDOR_CONFIG"] = str(config)
    return env


def start_vals(config: Path, *names: str) -> dict:
    """condor_config_val of each name under ``config``, started in parallel."""
    return {n: subprocess.Popen(["condor_config_val", n], env=config_env(config), text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
            for n in names}


def collect_vals(procs: dict) -> dict:
    """The values of ``start_vals``' queries; unset knobs left out."""
    out = {}
    for name, proc in procs.items():
        text = proc.communicate(timeout=20)[0]   # a stuck one is killed by cleanup()
        if proc.returncode == 0:
            out[name] = text.strip()
    return out


class RealBurst(Demo):
    """The demo, observed finely; ``measure()`` runs it and returns the facts."""

    def __init__(self, args, out: Path, extra_knobs=None, during=None, linger=0.0):
        super().__init__(args)   # its run directory: short, under /tmp (socket paths)
        self.extra_knobs, self.during, self.linger = dict(extra_knobs or {}), during, linger
        self.out = Path(out)
        self.inst: dict[str, dict] = {}   # instance id -> what we saw
        self.node_vals: dict = {}         # a node's knob queries, read at the end
        self.leftover: list = []

    def provisioner_config(self) -> Path:
        path = super().provisioner_config()
        if self.extra_knobs:
            with open(path, "a") as f:
                f.writelines(f"{k} = {v}\n" for k, v in self.extra_knobs.items())
        return path

    def _rec(self, iid: str) -> dict:
        return self.inst.setdefault(iid, {"id": iid, "phases": []})

    def poll(self, state_file: Path) -> None:
        now = time.time()
        # The provisioner's records: phases with their exact start (since).
        try:
            records = json.loads(state_file.read_text()).get("records", {})
        except (OSError, ValueError):   # written by rename: absent at first only
            records = {}
        for iid, r in records.items():
            i = self._rec(iid)
            i["requested"], i["joined_record"] = r["created"], r.get("joined")
            if not i["phases"] or i["phases"][-1][0] != r["phase"]:
                i["phases"].append([r["phase"], r["since"]])
        # The provider's listing: launch time (exact), master alive, gone.
        listed = {n.id: n for n in self.nodes()}
        for iid, n in listed.items():
            i = self._rec(iid)
            i.setdefault("created", n.launch_time)
            if n.state.name == "RUNNING":
                i["last_alive"] = now
                if not self.node_vals:   # not waited for here: it would blur the polls
                    self.node_vals = start_vals(Path(n.address) / "condor_config", *NODE_TIMING)
            elif "last_alive" in i:
                i.setdefault("stopped", now)
        for iid, i in self.inst.items():
            if "created" in i and iid not in listed:
                i.setdefault("stopped", now)
                i.setdefault("gone", now)
        # The collector: when each node's startd ad first appeared.
        for ad in self.slots():
            if ad.get("CloudInstanceID"):
                self._rec(str(ad["CloudInstanceID"])).setdefault("joined", now)

    def measure(self) -> dict:
        t0 = time.time()
        self.start_pool()
        self.start_provisioner()
        pconf = self.base / "provisioner.conf"
        spool = collect_vals(start_vals(pconf, "SPOOL"))["SPOOL"]
        state_file = Path(spool) / "cloud_plugins" / "provisioner-state.json"
        submit_time = time.time()
        cluster = self.submit()
        submitted = time.time()
        schedd, left, next_q, last, gap = self.pool.schedd(), self.args.jobs, 0.0, None, 0.0
        deadline = submit_time + self.args.timeout
        while not (left == 0 and self.inst and all("gone" in i for i in self.inst.values())):
            if time.time() > deadline or self.prov.poll() is not None:
                raise RuntimeError(f"burst unfinished ({left} jobs left, provisioner exit "
                                   f"{self.prov.poll()}):\n" + self._log_tail())
            now = time.time()
            gap, last = max(gap, now - (last or now)), now
            self.poll(state_file)
            if self.during is not None:
                self.during(self)
            if now >= next_q:   # the queue, once a second
                queue = schedd.query(f"ClusterId == {cluster}", ["JobStatus"])
                if any(a["JobStatus"] == 5 for a in queue):
                    raise RuntimeError("a job is held:\n" + self._log_tail())
                left, next_q = len(queue), now + 1
            time.sleep(POLL)
        wall = time.time() - t0
        time.sleep(self.linger)   # the provisioner runs on: it sees the last node gone
        history = self.history(cluster)
        self.read_log()
        shutil.copy(self.prov_log, self.out / "provisioner.log")
        result = self.derive(history, submit_time)
        result.update(knobs=self.knobs(pconf), node_knobs=collect_vals(self.node_vals),
                      submit_returned=submitted, wall_seconds=wall, poll_max_gap=gap)
        return result

    def history(self, cluster: int) -> list:
        res = self.pool.run("condor_history", "-json", "-constraint", f"ClusterId == {cluster}",
                            "-attributes", ",".join(HISTORY_ATTRS), timeout=60)
        ads = sorted(json.loads(res.stdout or "[]"), key=lambda a: a.get("ProcId", 0))
        self.history_file = self.out / "history.json"
        self.history_file.write_text(json.dumps(ads, indent=1))
        return ads

    def read_log(self) -> None:
        for line in self.prov_log.read_text().splitlines():
            m = LOG_EVENT.match(line)
            if m and m.group(3) in self.inst:
                when = datetime.strptime(m.group(1), "%m/%d/%y %H:%M:%S").timestamp()
                self.inst[m.group(3)].setdefault("log", {})[m.group(2).lower()] = when

    def knobs(self, pconf: Path) -> dict:
        """The provisioner's knobs (config.py's table: as set, else the default;
        entry knobs fall back to the global one) and the pool's timing knobs."""
        pool = start_vals(self.pool.config_path, *POOL_TIMING)
        dump = subprocess.run(["condor_config_val", "-dump", "CLOUD_PLUGINS_"], text=True,
                              env=config_env(pconf), capture_output=True, timeout=20).stdout
        set_ = {k: v for k, v in re.findall(r"^(CLOUD_PLUGINS_\w+) = ?(.*)$", dump, re.M) if v}
        entry = f"{cfgmod.PREFIX}{ENTRY.upper()}_"
        knobs = {k: v for k, v in set_.items() if k.startswith(entry)}   # entry settings
        for k in cfgmod.KNOBS:
            names = {cfgmod.GLOBAL: [cfgmod.PREFIX + k.name], cfgmod.ENTRY_ONLY: [entry + k.name],
                     cfgmod.ENTRY: [entry + k.name, cfgmod.PREFIX + k.name]}[k.scope]
            knobs[names[0]] = next((set_[n] for n in names if n in set_), k.default or "")
        knobs.update(collect_vals(pool))
        return dict(sorted(knobs.items()))

    def derive(self, history: list, submit_time: float) -> dict:
        instances = sorted(self.inst.values(), key=lambda i: i.get("created") or 0)
        for i in instances:
            first = {p: s for p, s in reversed(i["phases"])}   # each phase's first start
            i["drained"] = first.get("draining")
            i["terminated"] = first.get("terminating") or first.get("failed")
            i["jobs"] = sum(f"@{i['id']}@" in str(a.get("LastRemoteHost")) for a in history)
        done = [a for a in history if a.get("JobStatus") == 4]
        waits = [a["JobStartDate"] - a["QDate"] for a in done if "JobStartDate" in a]
        gone = [i["gone"] for i in instances if "gone" in i]
        return {
            "history": history, "history_file": str(self.history_file),
            "submit_time": submit_time, "instances": instances,
            "boot_seconds": [i["joined"] - i["created"] for i in instances
                             if i.get("joined") and i.get("created")],
            "shutdown_seconds": [i["gone"] - i["terminated"] for i in instances
                                 if i.get("terminated") and "gone" in i],
            "node_seconds": sum(i["gone"] - i["created"] for i in instances
                                if "gone" in i and i.get("created")),
            "vms_started": len(instances),
            "median_wait": statistics.median(waits) if waits else None,
            "last_retire": max(gone) - submit_time if gone else None,
            "jobs_completed": len(done),
        }

    def _log_tail(self) -> str:
        try:
            return "\n".join(self.prov_log.read_text().splitlines()[-30:])
        except (OSError, AttributeError):
            return ""

    def cleanup(self) -> None:
        """The demo's cleanup, then kill whatever still runs from the run directory."""
        run_dir = str(self.base)
        for proc in self.node_vals.values():   # our knob queries, if still running
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        super().cleanup()
        for pid in processes_using(run_dir):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        self.leftover = processes_using(run_dir)


def run_real_burst(base: Path, jobs=8, max_nodes=2, cpus=2, job_seconds=20, idle_timeout=10,
                   timeout=400, extra_knobs=None, during=None, linger=0.0) -> dict:
    """Run ``jobs`` cloud-mode ``sleep job_seconds`` jobs for real; return
    knobs, node_knobs, history (+ history_file, and provisioner.log, under
    ``base``), submit_time, instances (id, requested, created, joined, drained,
    terminated, stopped, gone, phases, log, jobs), boot_seconds (joined -
    created), shutdown_seconds (gone - terminated), node_seconds, vms_started,
    median_wait, last_retire, leftover_processes.  Everything is stopped after.
    ``extra_knobs`` go in the provisioner's config; ``during(burst)`` is
    called at every poll; the provisioner runs ``linger`` s after the burst."""
    base = Path(base)
    base.mkdir(parents=True, exist_ok=True)
    args = SimpleNamespace(jobs=jobs, max_nodes=max_nodes, cpus=cpus, job_seconds=job_seconds,
                           idle_timeout=idle_timeout, timeout=timeout, keep=False)
    burst = RealBurst(args, base, extra_knobs, during, linger)
    try:
        result = burst.measure()
    finally:
        burst.cleanup()
    result["leftover_processes"] = burst.leftover
    return result
