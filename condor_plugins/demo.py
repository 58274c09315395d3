"""`make demo`: a burst of cloud-mode jobs served by nodes the provisioner starts.

Everything is real and on this machine: a site pool (collector, negotiator,
schedd) with the project's fragments, the provisioner daemon with the `local`
provider (each node its own condor_master + startd, joined with a token), and
jobs submitted with condor_submit_cloud. The demo ends when every job has
completed on a cloud node and every node has retired, prints a summary and
exits 0; otherwise it exits 1.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from condor_plugins.localpool import PersonalPool, shipped_config_dir

ENTRY = "local1"


def log(msg: str) -> None:
    print(time.strftime("%H:%M:%S ") + msg, flush=True)


class Demo:
    def __init__(self, args):
        self.args = args
        self.base = Path(tempfile.mkdtemp(prefix="cp-demo-", dir="/tmp"))
        self.pool: PersonalPool | None = None
        self.prov: subprocess.Popen | None = None
        self.state_dir = self.base / "nodes"
        self.seen_nodes: dict[str, dict] = {}

    # -- setup -----------------------------------------------------------------
    def start_pool(self) -> None:
        d = shipped_config_dir()
        self.pool = PersonalPool(
            self.base / "site", name="site",
            include=[d / "10-cloud-plugins-defaults.conf", d / "20-cloud-central-manager.conf",
                     d / "20-cloud-submit.conf"],
            extra_config="CLOUD_PLUGINS_ADMIT_CLOUD_WORKERS = True\n"
                         "CLOUD_PLUGINS_SUBMIT_TRANSFORM = True\n")
        self.pool.start()
        log(f"demo directory: {self.base}")
        log(f"site pool up: collector {self.pool.collector_address}, schedd 'site'")

    def provisioner_config(self) -> Path:
        a = self.args
        e = f"CLOUD_PLUGINS_{ENTRY.upper()}_"
        knobs = {
            "CLOUD_PLUGINS_PROVIDERS": ENTRY,
            "CLOUD_PLUGINS_PROVISIONER_NAME": "demo",
            "CLOUD_PLUGINS_CYCLE_INTERVAL": 2,
            "CLOUD_PLUGINS_COLLECTOR_GRACE": 0,
            e + "TYPE": "local",
            e + "CPUS": a.cpus,
            e + "MEMORY": 512 * a.cpus,
            e + "DISK": 2000,
            e + "MAX_INSTANCES": a.max_nodes,
            e + "MAX_BOOTING": a.max_nodes,
            e + "IDLE_TIMEOUT": a.idle_timeout,
            e + "JOIN_TIMEOUT": 120,
            e + "DRAIN_TIMEOUT": 30,
            e + "STATE_DIR": self.state_dir,
        }
        path = self.base / "provisioner.conf"
        lines = [f"include : {self.pool.config_path}"] + [f"{k} = {v}" for k, v in knobs.items()]
        path.write_text("\n".join(lines) + "\n")
        return path

    def start_provisioner(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("_CONDOR_")}
        env["CONDOR_CONFIG"] = str(self.provisioner_config())
        env["PYTHONPATH"] = os.pathsep.join(sys.path)
        self.prov_log = self.base / "provisioner.log"
        with open(self.prov_log, "ab") as out:
            self.prov = subprocess.Popen([sys.executable, "-m", "condor_plugins.provisioning.provisioner"],
                                         env=env, stdout=out, stderr=subprocess.STDOUT,
                                         cwd=self.base)
        log(f"provisioner started (local provider, at most {self.args.max_nodes} nodes "
            f"of {self.args.cpus} cores; log {self.prov_log})")

    def submit(self) -> int:
        jobdir = self.base / "jobs"
        jobdir.mkdir()
        sub = jobdir / "burst.sub"
        sub.write_text(
            "executable = /bin/sleep\n"
            f"arguments = {self.args.job_seconds}\n"
            "request_cpus = 1\nrequest_memory = 64\nrequest_disk = 1000\n"
            "should_transfer_files = IF_NEEDED\n"
            f"log = {jobdir}/burst.log\n"
            f"queue {self.args.jobs}\n")
        env = {"PYTHONPATH": os.pathsep.join(sys.path)}
        res = self.pool.run(sys.executable, "-m", "condor_plugins.steering.submit_wrapper", "--mode", "cloud",
                            str(sub), check=False, env=env)
        if res.returncode != 0:
            raise RuntimeError(f"condor_submit_cloud failed: {res.stderr.strip()}")
        cluster = int(res.stdout.strip().rsplit("cluster", 1)[1].strip(" ."))
        log(f"submitted {self.args.jobs} cloud-mode jobs (cluster {cluster}) with condor_submit_cloud")
        return cluster

    # -- observation -----------------------------------------------------------
    def nodes(self) -> list:
        from condor_plugins.providers.local import LocalProvider
        try:
            return LocalProvider(ENTRY, {"STATE_DIR": str(self.state_dir)}).list({})
        except Exception:  # the provisioner may be writing; try again next tick
            return []

    def slots(self) -> list:
        try:
            return self.pool.collector().query(
                __import__("htcondor2").AdType.Startd, constraint="IsCloudNode =?= True",
                projection=["Name", "CloudInstanceID", "State", "Activity", "Cpus",
                            "PartitionableSlot"])
        except Exception:
            return []

    def progress(self, cluster: int, t0: float):
        schedd = self.pool.schedd()
        queue = schedd.query(f"ClusterId == {cluster}", ["JobStatus"])
        idle = sum(1 for a in queue if a["JobStatus"] == 1)
        running = sum(1 for a in queue if a["JobStatus"] == 2)
        held = sum(1 for a in queue if a["JobStatus"] == 5)
        done = self.args.jobs - len(queue)
        nodes = [n for n in self.nodes() if n.state.name in ("PENDING", "RUNNING")]
        now = time.time()
        for n in nodes:
            self.seen_nodes.setdefault(n.id, {"first": now})["last"] = now
        slots = self.slots()
        joined = {s.get("CloudInstanceID") for s in slots}
        busy = {s.get("CloudInstanceID") for s in slots
                if not s.get("PartitionableSlot") and s.get("State") == "Claimed"}
        draining = {s.get("CloudInstanceID") for s in slots if s.get("Activity") == "Retiring"
                    or s.get("State") == "Drained"}
        booting = [n for n in nodes if n.id not in joined]
        log(f"[{now - t0:5.0f}s] jobs: {idle} idle, {running} running, {done} done"
            + (f", {held} HELD" if held else "")
            + f" | nodes: {len(booting)} booting, {len(joined & {n.id for n in nodes})} joined, "
            f"{len(busy)} busy, {len(draining)} draining")
        return done, held, nodes

    # -- the run ---------------------------------------------------------------
    def run(self) -> int:
        t0 = time.time()
        self.start_pool()
        self.start_provisioner()
        cluster = self.submit()
        t_submit = time.time()
        deadline = t_submit + self.args.timeout
        while time.time() < deadline:
            if self.prov.poll() is not None:
                log(f"the provisioner exited with status {self.prov.returncode}")
                break
            done, held, nodes = self.progress(cluster, t_submit)
            if held:
                log("a job is held: giving up")
                break
            if done == self.args.jobs and not nodes:
                return self.summary(cluster, t_submit, time.time() - t0)
            time.sleep(2)
        else:
            log(f"timed out after {self.args.timeout}s")
        self.show_provisioner_log()
        return 1

    def summary(self, cluster: int, t_submit: float, wall: float) -> int:
        hist = list(self.pool.schedd().history(
            f"ClusterId == {cluster}",
            ["ProcId", "LastRemoteHost", "JobStatus", "ExitCode", "JobCurrentStartDate",
             "CompletionDate", "RemoteWallClockTime"]))
        completed = [a for a in hist if a.get("JobStatus") == 4 and a.get("ExitCode") == 0]
        # LastRemoteHost is slot1_N@<node name>@<host>; a local node's name is its instance id.
        ran_on = [str(a.get("LastRemoteHost", "")).split("@")[1:2] for a in completed]
        on_cloud = [r for r in ran_on if r and r[0] in self.seen_nodes]
        first_start = min((a["JobCurrentStartDate"] for a in completed if "JobCurrentStartDate" in a),
                          default=None)
        busy = sum(float(a.get("RemoteWallClockTime", 0)) for a in completed)
        alive = sum(v["last"] - v["first"] for v in self.seen_nodes.values()) * self.args.cpus
        print()
        print("== demo summary ==")
        print(f"jobs completed       : {len(completed)}/{self.args.jobs}, "
              f"{len(on_cloud)} of them on cloud nodes the provisioner started")
        print(f"cloud nodes used     : {len(self.seen_nodes)} (cap {self.args.max_nodes}), all retired")
        if first_start:
            print(f"time to first job    : {first_start - t_submit:.0f} s after submit")
        print(f"core-seconds busy    : {busy:.0f}")
        print(f"core-seconds alive   : {alive:.0f} (utilisation {100 * busy / alive:.0f}%)" if alive else "")
        print(f"wall time            : {wall:.0f} s")
        ok = len(completed) == self.args.jobs and len(on_cloud) == self.args.jobs
        print("RESULT: " + ("OK" if ok else "FAILED (a job ran outside the cloud nodes?)"))
        return 0 if ok else 1

    def show_provisioner_log(self) -> None:
        try:
            tail = self.prov_log.read_text().splitlines()[-30:]
        except OSError:
            return
        print("--- provisioner log (tail) ---")
        print("\n".join(tail))

    def cleanup(self) -> None:
        if self.prov is not None and self.prov.poll() is None:
            self.prov.send_signal(signal.SIGTERM)
            try:
                self.prov.wait(30)
            except subprocess.TimeoutExpired:
                self.prov.kill()
        try:
            from condor_plugins.providers.local import LocalProvider
            p = LocalProvider(ENTRY, {"STATE_DIR": str(self.state_dir)})
            p.terminate([i.id for i in p.list({})])
        except Exception as exc:  # cleanup must go on
            log(f"cleanup of nodes: {exc}")
        if self.pool is not None:
            self.pool.stop()
        if not self.args.keep:
            shutil.rmtree(self.base, ignore_errors=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="condor_plugins.demo", description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=20)
    ap.add_argument("--max-nodes", type=int, default=3)
    ap.add_argument("--cpus", type=int, default=2, help="cores per node")
    ap.add_argument("--job-seconds", type=int, default=10)
    ap.add_argument("--idle-timeout", type=int, default=10)
    ap.add_argument("--timeout", type=int, default=900)
    ap.add_argument("--keep", action="store_true", help="keep the demo's directory")
    args = ap.parse_args(argv)
    demo = Demo(args)
    try:
        return demo.run()
    except KeyboardInterrupt:
        return 130
    finally:
        demo.cleanup()


if __name__ == "__main__":
    sys.exit(main())
