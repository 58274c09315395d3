"""A throw-away GRAM site for tests: a Simple CA, host and user certificates,
a proxy, a grid-mapfile and a globus-gatekeeper on 127.0.0.1, run as the
current (unprivileged) user against a test HTCondor pool.

Everything lives under one directory; no system file is written.  The job
manager types of jobmanager/ are taken from the repository, not from an
installation:

* the Perl modules through PERL5LIB (globus-job-manager-script.pl loads
  ``Globus::GRAM::JobManager::<type>`` from @INC);
* the ``.rvf`` files and ``globus-cloud.conf`` through a private
  GLOBUS_LOCATION (``-home`` in the job manager's ``-conf`` file): the job
  manager reads ``${datadir}/globus/globus_gram_job_manager/<type>.rvf``, with
  ``${datadir}`` = ``$GLOBUS_LOCATION/share``, and cloud.pm reads
  ``$GLOBUS_LOCATION/etc/globus/globus-cloud.conf``; the prefix mirrors /usr
  with symbolic links;
* the service files are the shipped ones with ``-conf`` pointing at the job
  manager configuration in the site directory;
* ``globus-cloud.conf`` (the shipped one) names a shim that runs
  ``python3 -m condor_plugins.steering.submit_wrapper`` from this checkout, and the
  test pool's CONDOR_CONFIG (the job manager runs its Perl scripts with a
  fixed environment: PATH, HOME, PERL5LIB, GLOBUS_LOCATION, ..., no
  CONDOR_CONFIG).

Secrets (private keys, the proxy) are 0600 and never printed.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from condor_plugins.localpool import free_port, wait_for

REPO = Path(__file__).resolve().parent.parent
JOBMANAGER_DIR = REPO / "jobmanager"
TYPES = ("cloud", "nocloud")
CA_PASS = "throwaway-test-ca"  # the CA lives and dies with the test directory
CA_SUBJECT = "cn=condor_plugins Test CA, ou=GRAM, o=condor_plugins test"
BASE_DN = "/O=condor_plugins test/OU=GRAM"
SYSTEM_RVF_DIR = Path("/usr/share/globus/globus_gram_job_manager")



class GramError(RuntimeError):
    pass


def _run(argv, *, env=None, cwd=None, timeout=60, check=True, input=None):
    res = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True,
                         timeout=timeout, input=input)
    if check and res.returncode != 0:
        raise GramError(f"{argv[0]} failed ({res.returncode}):\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}")
    return res


def _private(path: Path) -> None:
    path.chmod(0o600)


class GramSite:
    def __init__(self, root: Path, condor_config: Path, user: str):
        self.root = Path(root)
        self.condor_config = Path(condor_config)
        self.user = user
        self.certdir = self.root / "certificates"
        self.port = None
        self.gatekeeper = None
        self.host_dn = None
        self.user_dn = None

    # ------------------------------------------------------------ credentials
    def _openssl_env(self):
        env = dict(os.environ)
        env.pop("OPENSSL_CONF", None)
        return env

    def make_ca(self) -> None:
        ca = self.root / "ca"
        res = _run(["grid-ca-create", "-noint", "-force", "-dir", str(ca), "-subject", CA_SUBJECT,
              "-pass", CA_PASS, "-bits", "2048", "-days", "2", "-nobuild"],
             env=self._openssl_env(), cwd=self.root, check=False)
        # (it fails only where it tries to install the CA system-wide)
        cacert = ca / "cacert.pem"
        if not cacert.is_file():
            raise GramError(f"grid-ca-create made no CA certificate:\n{res.stdout[-2000:]}{res.stderr[-2000:]}")
        self.certdir.mkdir(mode=0o755, exist_ok=True)
        # The trusted directory: the CA certificate and its signing policy under
        # the subject hashes OpenSSL (and so GSI) looks up.
        for opt in ("-subject_hash", "-subject_hash_old"):
            h = _run(["openssl", "x509", "-noout", opt, "-in", str(cacert)]).stdout.strip()
            shutil.copy(cacert, self.certdir / f"{h}.0")
            shutil.copy(ca / "signing-policy", self.certdir / f"{h}.signing_policy")

    def issue(self, name: str, cn: str) -> tuple[Path, Path, str]:
        """A certificate for ``CN=<cn>`` signed by the test CA: (cert, key, DN)."""
        key = self.root / f"{name}key.pem"
        req = self.root / f"{name}req.pem"
        cert = self.root / f"{name}cert.pem"
        dn = f"{BASE_DN}/CN={cn}"
        subj = dn.replace("host/", "host\\/")
        old = os.umask(0o077)
        try:
            _run(["openssl", "req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                  "-out", str(req), "-subj", subj], env=self._openssl_env(), cwd=self.root)
        finally:
            os.umask(old)
        _private(key)
        _run(["grid-ca-sign", "-in", str(req), "-out", str(cert), "-dir", str(self.root / "ca"),
              "-passin", f"pass:{CA_PASS}", "-batch"], env=self._openssl_env(), cwd=self.root)
        subject = _run(["grid-cert-info", "-subject", "-file", str(cert)]).stdout.strip()
        return cert, key, subject

    def make_credentials(self) -> None:
        self.make_ca()
        self.hostcert, self.hostkey, self.host_dn = self.issue("host", "host/localhost")
        self.usercert, self.userkey, self.user_dn = self.issue("user", "GRAM Test User")
        self.proxy = self.root / "proxy"
        env = self.client_env(proxy=False)
        _run(["grid-proxy-init", "-cert", str(self.usercert), "-key", str(self.userkey),
              "-out", str(self.proxy), "-hours", "12", "-q"], env=env, cwd=self.root)
        _private(self.proxy)
        (self.root / "grid-mapfile").write_text(f'"{self.user_dn}" {self.user}\n')

    # ------------------------------------------------------------- site files
    def _prefix(self) -> Path:
        """A GLOBUS_LOCATION that is /usr plus the repository's .rvf files."""
        prefix = self.root / "prefix"
        share = prefix / "share"
        rvf_dir = share / "globus" / "globus_gram_job_manager"
        rvf_dir.mkdir(parents=True)
        for sub in ("bin", "sbin", "lib", "libexec", "include"):
            if Path("/usr", sub).exists():
                (prefix / sub).symlink_to(Path("/usr", sub))
        for entry in Path("/usr/share").iterdir():
            if entry.name != "globus":
                (share / entry.name).symlink_to(entry)
        for entry in Path("/usr/share/globus").iterdir():
            if entry.name != "globus_gram_job_manager":
                (share / "globus" / entry.name).symlink_to(entry)
        for entry in SYSTEM_RVF_DIR.iterdir():
            (rvf_dir / entry.name).symlink_to(entry)
        for t in TYPES:
            target = rvf_dir / f"{t}.rvf"
            if target.is_symlink():
                target.unlink()  # an installed copy: test the repository's
            target.symlink_to(JOBMANAGER_DIR / "cloud.rvf")
        return prefix

    def write_site_files(self) -> None:
        # globus-job-manager-script.pl puts /usr/share/perl5 before PERL5LIB:
        # an installed copy of a module would be tested instead of ours.
        for t in TYPES:
            installed = Path("/usr/share/perl5/Globus/GRAM/JobManager") / f"{t}.pm"
            if installed.exists() and installed.read_bytes() != (JOBMANAGER_DIR / f"{t}.pm").read_bytes():
                raise GramError(f"{installed} differs from jobmanager/{t}.pm and would be used instead")
        prefix = self._prefix()
        perl = self.root / "perl" / "Globus" / "GRAM" / "JobManager"
        perl.mkdir(parents=True)
        for t in TYPES:
            (perl / f"{t}.pm").symlink_to(JOBMANAGER_DIR / f"{t}.pm")
        bindir = self.root / "bin"
        bindir.mkdir()
        shim = bindir / "condor_submit_cloud"
        shim.write_text("#!/bin/sh\n"
                        f"PYTHONPATH={REPO} exec {sys.executable} -m condor_plugins.steering.submit_wrapper \"$@\"\n")
        shim.chmod(0o755)
        etc = prefix / "etc" / "globus"
        etc.mkdir(parents=True)
        shipped = (JOBMANAGER_DIR / "globus-cloud.conf").read_text()
        assert '"/usr/bin/condor_submit_cloud"' in shipped
        (etc / "globus-cloud.conf").write_text(
            shipped.replace('"/usr/bin/condor_submit_cloud"', f'"{shim}"')
            + f'condor_config="{self.condor_config}"\n')
        (self.root / "state").mkdir(mode=0o755)
        (self.root / "log").mkdir(mode=0o755)
        jm_conf = self.root / "globus-gram-job-manager.conf"
        jm_conf.write_text(
            "-globus-toolkit-version 6.2\n"
            f"-home {prefix}\n"
            f"-log-pattern {self.root}/log/gram_$(LOGNAME).log\n"
            "-log-levels FATAL|ERROR|WARN|INFO|DEBUG\n"
            f"-state-file-dir {self.root}/state\n"
            f"-x509-cert-dir {self.certdir}\n")
        services = self.root / "grid-services"
        services.mkdir()
        for t in TYPES:
            line = (JOBMANAGER_DIR / f"jobmanager-{t}").read_text()
            assert line.count(" -conf ") == 1, line
            (services / f"jobmanager-{t}").write_text(re.sub(r" -conf \S+", f" -conf {jm_conf}", line))

    # --------------------------------------------------------------- processes
    @property
    def marker(self) -> str:
        return f"CP_GRAM_SITE={self.root}"

    def client_env(self, proxy: bool = True) -> dict:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("X509_", "GLOBUS_", "_CONDOR_"))}
        env.update({
            "X509_CERT_DIR": str(self.certdir),
            "GLOBUS_HOSTNAME": "localhost",
        })
        if proxy:
            env["X509_USER_PROXY"] = str(self.proxy)
        return env

    def gatekeeper_env(self) -> dict:
        env = self.client_env(proxy=False)
        env.update({
            "CONDOR_CONFIG": str(self.condor_config),
            "PERL5LIB": str(self.root / "perl"),
            "PYTHONPATH": os.pathsep.join(p for p in sys.path if p),
            "CP_GRAM_SITE": str(self.root),
        })
        return env

    def start_gatekeeper(self, timeout: float = 20) -> None:
        self.port = free_port()
        log = self.root / "gatekeeper.log"
        out = open(self.root / "gatekeeper.stdout", "ab")
        self.gatekeeper = subprocess.Popen(
            ["globus-gatekeeper", "-f", "-p", str(self.port), "-l", str(log),
             "-grid_services", str(self.root / "grid-services"),
             "-gridmap", str(self.root / "grid-mapfile"),
             "-x509_cert_dir", str(self.certdir),
             "-x509_user_cert", str(self.hostcert), "-x509_user_key", str(self.hostkey)],
            env=self.gatekeeper_env(), cwd=self.root, stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True)
        out.close()

        def listening():
            if self.gatekeeper.poll() is not None:
                raise GramError(f"globus-gatekeeper exited ({self.gatekeeper.returncode}):\n"
                                + self.logs())
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", self.port)) == 0
        wait_for(listening, timeout, 0.2, what="the gatekeeper's port")

    def contact(self, service: str) -> str:
        return f"localhost:{self.port}/{service}:{self.host_dn}"

    def client(self, *argv: str, timeout: float = 120, check: bool = True):
        try:
            return _run(list(argv), env=self.client_env(), cwd=self.root, timeout=timeout, check=check)
        except (GramError, subprocess.TimeoutExpired) as exc:
            raise GramError(f"{exc}\n--- site logs ---\n{self.logs()}") from None

    def site_processes(self) -> list[int]:
        """PIDs of this site: the gatekeeper and job managers (they carry the
        site's marker in their environment) and the job managers' Perl scripts
        (a fixed environment, but the site's prefix on their command line)."""
        want = (self.marker + "\0").encode()
        root = str(self.root).encode()
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == os.getpid():
                continue
            try:
                if (want in Path(f"/proc/{entry}/environ").read_bytes()
                        or root in Path(f"/proc/{entry}/cmdline").read_bytes()):
                    found.append(int(entry))
            except OSError:
                pass
        return [p for p in found if not _zombie(p)]

    def stop(self) -> list[int]:
        """Stop the gatekeeper and every job manager it started; return what had to be killed."""
        if self.gatekeeper is not None and self.gatekeeper.poll() is None:
            try:
                os.killpg(self.gatekeeper.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.gatekeeper.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(self.gatekeeper.pid, signal.SIGKILL)
                self.gatekeeper.wait(5)
        killed = []
        for sig in (signal.SIGTERM, signal.SIGKILL):
            pids = self.site_processes()
            for pid in pids:
                try:
                    os.kill(pid, sig)
                    killed.append(pid)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + 5
            while pids and time.monotonic() < deadline:
                pids = [p for p in pids if Path(f"/proc/{p}").exists() and not _zombie(p)]
                time.sleep(0.1)
        return sorted(set(killed))

    def logs(self, lines: int = 40) -> str:
        chunks = []
        for p in [self.root / "gatekeeper.log", self.root / "gatekeeper.stdout",
                  *sorted((self.root / "log").glob("*"))]:
            if p.is_file():
                text = p.read_text(errors="replace").splitlines()[-lines:]
                chunks.append(f"--- {p.name} ---\n" + "\n".join(text))
        return "\n".join(chunks)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")
    except (OSError, IndexError):
        return True
