"""A local single-node SLURM cluster for tests, and a helper to run Snakemake through it.

Usage in a test module::

    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).parent / "slurm"))
    from slurm_cluster import run_through_slurm, slurm_cluster  # noqa: F401 (fixture)

    def test_something(slurm_cluster, tmp_path):
        proc, job_count = run_through_slurm(slurm_cluster, SNAKEFILE, tmp_path, ["--configfile", ...])
        assert proc.returncode == 0, proc.stderr
        proc.slurm_jobs  # [SlurmJob, ...] that this Snakemake run submitted

The fixture ``slurm_cluster`` (session scope) runs ``start_slurm.sh`` (installs
slurm-wlm + munge from Debian when missing, needs root) and ``stop_slurm.sh``
at the end.  It skips, with the reason, where SLURM cannot be had (not root,
no apt, apt fails); set ``BRAINAGE_REQUIRE_SLURM=1`` to make that a failure
instead (CI).  The cluster lives in ``$BRAINAGE_SLURM_STATE`` (default
``/tmp/brainage-slurm-<uid>``) and is shared by all pytest processes
(pytest-xdist workers): start/stop are serialised by a lock file and the last
user stops it.
"""

from __future__ import annotations

import fcntl
import os
import re
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SLURM_PROFILE = ROOT / "workflow" / "profiles" / "slurm"
SNAKEMAKE = Path(sys.executable).with_name("snakemake")
START = HERE / "start_slurm.sh"
STOP = HERE / "stop_slurm.sh"

# Options layered over the profile for the local test cluster.  Command-line
# options beat the workflow profile.  The caller's extra_args come after them.
TEST_OVERRIDES = [
    # Poll SLURM after 2 s instead of 40 s.
    "--slurm-init-seconds-before-status-checks",
    "2",
    # No accounting database here: job states come from squeue (MinJobAge=3600).
    "--slurm-status-command",
    "squeue",
    # Same disk, no NFS delay.
    "--latency-wait",
    "5",
    # Fail at once rather than resubmitting a failed job.
    "--retries",
    "0",
    "--slurm-keep-successful-logs",
]


class SlurmUnavailable(Exception):
    """SLURM cannot be set up on this machine (a reason to skip, not to fail)."""


@dataclass
class SlurmCluster:
    state_dir: Path
    conf: Path
    start_output: str = ""
    start_seconds: float = 0.0
    started_here: bool = False

    @property
    def env(self) -> dict[str, str]:
        """Environment for Snakemake and the SLURM client commands.

        sbatch runs with --export=ALL, so jobs inherit this: the virtualenv's
        bin directory comes first on PATH and SLURM_CONF points to our cluster.
        """
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_", "SRUN_"))}
        venv_bin = str(Path(sys.executable).parent)
        env["PATH"] = os.pathsep.join([venv_bin, env.get("PATH", "/usr/bin:/bin")])
        env["VIRTUAL_ENV"] = str(Path(sys.executable).parents[1])
        env["SLURM_CONF"] = str(self.conf)
        return env

    def run(self, *command: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=timeout, check=False)


@dataclass
class SlurmJob:
    job_id: int
    name: str
    comment: str
    state: str
    submit: str
    start: str
    end: str
    cpus: int
    min_memory: str  # as squeue prints it, e.g. "8000M"
    tres: str  # GPUs etc. the job asked for, e.g. "gres:gpu:1" ("N/A" if none)

    @property
    def rule(self) -> str:
        """The rule name from the plugin's comment ``rule_<name>[_wildcards_<...>]``."""
        match = re.match(r"rule_(.+?)(?:_wildcards_.*)?$", self.comment)
        return match.group(1) if match else ""


def state_dir() -> Path:
    return Path(os.environ.get("BRAINAGE_SLURM_STATE", f"/tmp/brainage-slurm-{os.getuid()}"))


@contextmanager
def _locked(state: Path):
    state.parent.mkdir(parents=True, exist_ok=True)
    with open(state.parent / f".{state.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _live_users(state: Path) -> list[Path]:
    users = state / "users"
    live = []
    for entry in users.glob("*") if users.is_dir() else []:
        if entry.name.isdigit() and _pid_alive(int(entry.name)):
            live.append(entry)
        else:
            entry.unlink(missing_ok=True)
    return live


def start_cluster(state: Path | None = None, timeout: float = 900) -> SlurmCluster:
    """Start (or join) the shared test cluster; raise SlurmUnavailable where impossible."""
    state = state or state_dir()
    if sys.platform != "linux":
        raise SlurmUnavailable("the local SLURM cluster needs Linux")
    if os.geteuid() != 0:
        raise SlurmUnavailable("the local SLURM cluster needs root (apt-get, slurmd running jobs)")
    try:
        import snakemake_executor_plugin_slurm  # noqa: F401
    except ImportError as error:
        raise SlurmUnavailable("snakemake-executor-plugin-slurm is not installed in this environment") from error
    with _locked(state):
        already = bool(_live_users(state))
        t0 = time.monotonic()
        proc = subprocess.run(
            ["bash", str(START), str(state)],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        seconds = time.monotonic() - t0
        output = proc.stdout + proc.stderr
        if proc.returncode == 3:
            raise SlurmUnavailable(output.strip().splitlines()[-1] if output.strip() else "start_slurm.sh: exit 3")
        if proc.returncode != 0:
            raise RuntimeError(f"start_slurm.sh failed ({proc.returncode}):\n{output}")
        (state / "users").mkdir(exist_ok=True)
        (state / "users" / str(os.getpid())).touch()
    return SlurmCluster(state, state / "slurm.conf", output, seconds, started_here=not already)


def stop_cluster(cluster: SlurmCluster) -> str:
    """Leave the shared cluster; the last user stops it."""
    with _locked(cluster.state_dir):
        (cluster.state_dir / "users" / str(os.getpid())).unlink(missing_ok=True)
        if _live_users(cluster.state_dir):
            return "cluster still used by another test process; left running"
        proc = subprocess.run(
            ["bash", str(STOP), str(cluster.state_dir)], capture_output=True, text=True, timeout=120, check=False
        )
        return proc.stdout + proc.stderr


@pytest.fixture(scope="session")
def slurm_cluster():
    """A running local SLURM cluster (session-wide); skips where SLURM cannot be had."""
    try:
        cluster = start_cluster()
    except SlurmUnavailable as error:
        if os.environ.get("BRAINAGE_REQUIRE_SLURM") == "1":
            pytest.fail(f"SLURM required (BRAINAGE_REQUIRE_SLURM=1) but unavailable: {error}")
        pytest.skip(f"no local SLURM cluster: {error}")
    print(f"\n[slurm] cluster ready in {cluster.start_seconds:.1f} s\n{cluster.start_output}")
    try:
        yield cluster
    finally:
        print(f"\n[slurm] {stop_cluster(cluster)}")


def slurm_jobs(cluster: SlurmCluster, run_id: str) -> list[SlurmJob]:
    """The jobs SLURM still remembers (MinJobAge) under the plugin's run ID (= job name)."""
    proc = cluster.run(
        "squeue", "--states=all", "--noheader", "--name", run_id, "--format=%i|%j|%k|%T|%V|%S|%e|%C|%m|%b"
    )
    if proc.returncode != 0:
        raise RuntimeError(f"squeue failed: {proc.stderr}")
    # %b (tres per node) misses `--gpus`; the job's TRES request needs --Format.
    tres_proc = cluster.run(
        "squeue", "--states=all", "--noheader", "--name", run_id, "--Format=JobID:20,tres-per-job:200"
    )
    tres = dict(line.split(None, 1) for line in tres_proc.stdout.splitlines() if len(line.split()) == 2)
    jobs = []
    for line in proc.stdout.splitlines():
        if line.strip():
            job_id, name, comment, state, submit, start, end, cpus, memory, per_node = line.strip().split("|")
            requested = ",".join(t for t in (tres.get(job_id, "").strip(), per_node) if t and t != "N/A")
            jobs.append(
                SlurmJob(int(job_id), name, comment, state, submit, start, end, int(cpus), memory, requested or "N/A")
            )
    return sorted(jobs, key=lambda job: job.job_id)


def run_through_slurm(
    cluster: SlurmCluster,
    snakefile: Path | str,
    workdir: Path | str,
    extra_args: list[str] | tuple[str, ...] = (),
    timeout: float = 600,
    profile: Path | str = SLURM_PROFILE,
) -> tuple[subprocess.CompletedProcess, int]:
    """Run Snakemake on ``snakefile`` in ``workdir`` with the SLURM profile.

    The profile is given as the workflow profile, which replaces
    workflow/profiles/default (as users are told to run it).  Returns the
    finished process and the number of SLURM jobs it submitted; the process
    also carries ``slurm_run_id``, ``slurm_jobs`` (list of SlurmJob),
    ``submitted_ids`` (SLURM job IDs from Snakemake's log), ``wall_seconds``
    and ``command``.  On timeout the run's SLURM jobs are cancelled and
    subprocess.TimeoutExpired is raised.
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    command = [
        str(SNAKEMAKE),
        "--snakefile",
        str(snakefile),
        "--directory",
        str(workdir),
        "--workflow-profile",
        str(profile),
        *TEST_OVERRIDES,
        *extra_args,
    ]
    t0 = time.monotonic()
    popen = subprocess.Popen(
        command,
        env=cluster.env,
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = popen.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(popen.pid, signal.SIGKILL)
        stdout, stderr = popen.communicate()
        run_id = _run_id(stdout + stderr)
        if run_id:
            cluster.run("scancel", "--name", run_id)
        # Replaces communicate()'s timeout: the same timeout, now with the output.
        raise subprocess.TimeoutExpired(command, timeout, output=stdout, stderr=stderr) from None
    wall = time.monotonic() - t0
    proc = subprocess.CompletedProcess(command, popen.returncode, stdout, stderr)
    log = stdout + stderr
    proc.command = command
    proc.wall_seconds = wall
    proc.slurm_run_id = _run_id(log)
    proc.submitted_ids = [int(i) for i in re.findall(r"submitted with SLURM jobid (\d+)", log)]
    proc.slurm_jobs = slurm_jobs(cluster, proc.slurm_run_id) if proc.slurm_run_id else []
    return proc, len(proc.slurm_jobs)


def _run_id(log: str) -> str | None:
    match = re.search(r"SLURM run ID: (\S+)", log)
    return match.group(1) if match else None
