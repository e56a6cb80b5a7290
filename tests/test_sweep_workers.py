"""``lit-unlearn sweep`` workers as separate processes: a worker killed mid-trial and restarted,
two workers sharing one study, and a study on a real PostgreSQL server."""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from tests.helpers.cli import TINY, cli_env, lit_unlearn, method_config, start_lit_unlearn

optuna = pytest.importorskip("optuna")
from optuna.trial import TrialState  # noqa: E402

from lit_unlearn.sweep.study import finished  # noqa: E402

STUDY = "workers"
# trials of 30-60 steps (about 1-3 s on the tiny preset): long enough to kill one mid-trial
FAST = ["--trainer.accelerator=cpu", "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
        "--model.init_args.compare_with=null", "--data.init_args.max_eval_examples=8", "--trainer.max_epochs=1000"]


def space(tmp_path: Path, trials: int, steps: tuple[int, int] = (30, 60)) -> Path:
    data = {"study": STUDY, "trials": trials, "seed": 0, "heartbeat": 1,
            "parameters": {"model.init_args.optimizer.init_args.lr": {"low": 1e-4, "high": 3e-3, "log": True},
                           "trainer.max_steps": {"low": steps[0], "high": steps[1]}},
            "objectives": {"forget/fact_acc": "minimize", "retain/fact_acc": "maximize"}}
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def sweep_args(spec: Path, out: Path, *extra: str) -> list[str]:
    return ["sweep", "--config", method_config("npo"), "--config", TINY, "--sweep", str(spec), "--out", str(out),
            *FAST, *extra]


def load(storage: str):
    return optuna.load_study(study_name=STUDY, storage=storage)


def sqlite(out: Path) -> str:
    return f"sqlite:///{(out / 'study.db').resolve()}"


def surplus(t) -> bool:
    return t.state == TrialState.PRUNED and bool(t.user_attrs.get("surplus"))


# ------------------------------------------------------------------ a worker killed mid-trial
def test_a_sweep_killed_mid_trial_and_restarted_loses_and_repeats_no_trial(tmp_path, tiny_subject):
    n, out = 3, tmp_path / "out"
    args = sweep_args(space(tmp_path, n), out)
    proc = start_lit_unlearn(args, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 180
        while not (out / "trials" / "trial_001").is_dir():
            assert proc.poll() is None, f"the sweep exited ({proc.returncode}) before trial_001 started"
            assert time.monotonic() < deadline, "trial_001 did not start within 180 s"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    killed = load(sqlite(out))
    assert [t.state for t in killed.get_trials()] == [TrialState.COMPLETE, TrialState.RUNNING]
    time.sleep(3)  # > the grace period (2 x heartbeat): trial 1 is now a dead worker's
    lit_unlearn(args, cwd=tmp_path, timeout=300)

    study = load(sqlite(out))
    trials = study.get_trials()
    assert finished(study) == n
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert len(complete) == n, [(t.number, t.state.name) for t in trials]
    assert [t.number for t in failed] == [1]  # the killed trial, failed by its stale heartbeat
    retries = [t for t in trials if t.system_attrs.get("failed_trial") is not None]
    assert [t.system_attrs["failed_trial"] for t in retries] == [1]
    retry = retries[0]
    assert retry.number > 1 and retry.state == TrialState.COMPLETE and retry.params == failed[0].params
    # nothing repeated: each complete trial has its own parameters and its own run directory
    keys = [tuple(sorted(t.params.items())) for t in complete]
    assert len(set(keys)) == n
    assert [Path(t.user_attrs["log_dir"]).name for t in complete] == [f"trial_{t.number:03d}" for t in complete]
    assert len({t.number for t in complete}) == n and 1 not in {t.number for t in complete}
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert (out / "pareto.csv").is_file() and (out / "best.yaml").is_file()


# ------------------------------------------------------------------ two workers, one study
def start_worker(args: list[str], cwd: Path, log: Path) -> tuple[subprocess.Popen, object]:
    handle = log.open("w")
    proc = subprocess.Popen(["lit-unlearn", *args], cwd=cwd, env=cli_env(), stdout=handle, stderr=subprocess.STDOUT)
    return proc, handle


def test_two_workers_sharing_one_study_complete_n_trials_in_total(tmp_path, tiny_subject):
    n, out = 4, tmp_path / "out"
    args = sweep_args(space(tmp_path, n, steps=(10, 20)), out)
    workers = [start_worker(args, tmp_path, tmp_path / f"worker{i}.log") for i in range(2)]
    try:
        codes = [proc.wait(timeout=300) for proc, _ in workers]
    finally:
        for proc, handle in workers:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            handle.close()
    logs = [(tmp_path / f"worker{i}.log").read_text() for i in range(2)]
    assert codes == [0, 0], "\n\n".join(log[-3000:] for log in logs)

    study = load(sqlite(out))
    trials = study.get_trials()
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    others = [t for t in trials if t.state != TrialState.COMPLETE and not surplus(t)]
    assert len(complete) == n and not others, [(t.number, t.state.name, t.user_attrs) for t in trials]
    assert finished(study) == n
    assert len({t.number for t in trials}) == len(trials)
    assert len({tuple(sorted(t.params.items())) for t in complete}) == n
    # both workers ran trials (neither sat idle), each in its own run directory
    ran = [sum(f"lit-unlearn sweep: trial_{t.number:03d} " in log for t in complete) for log in logs]
    assert sum(ran) == n and min(ran) >= 1, ran
    assert sorted(p.name for p in (out / "trials").iterdir() if p.is_dir()) == \
        [f"trial_{t.number:03d}" for t in complete]


# ------------------------------------------------------------------ PostgreSQL
def postgres_bin() -> Path | None:
    """The directory of ``initdb`` and ``pg_ctl``: on PATH, in /usr/local/bin, or Debian's newest."""
    found = shutil.which("initdb") or shutil.which("initdb", path="/usr/local/bin")
    candidates = [Path(found).resolve().parent] if found else []
    candidates += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)]
    return next((c for c in candidates if (c / "initdb").is_file() and (c / "pg_ctl").is_file()), None)


def as_postgres_user() -> tuple[list[str], str | None] | None:
    """A command prefix running a program as a user initdb accepts (initdb refuses root), and that
    user's name (None: this user); None when running as root without a way to switch users."""
    if os.geteuid() != 0:
        return [], None
    import pwd

    for user in ("postgres", "nobody"):
        try:
            pwd.getpwnam(user)
        except KeyError:
            continue
        if shutil.which("runuser"):
            return ["runuser", "-u", user, "--"], user
        if shutil.which("su"):
            return ["su", "-s", "/bin/sh", "-c", '"$0" "$@"', user, "--"], user
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def postgres_url():
    """A throw-away PostgreSQL cluster (initdb in a temp dir, a unix socket there, trust auth) with a
    database ``sweep``; stopped (immediate) and removed afterwards."""
    if sys.platform != "linux":
        pytest.skip("the PostgreSQL test runs on Linux")
    pytest.importorskip("psycopg2", reason="psycopg2 is not installed (pip install psycopg2-binary)")
    import psycopg2

    bindir = postgres_bin()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found on PATH, in /usr/local/bin or "
                    "/usr/lib/postgresql/*/bin (apt-get install postgresql)")
    switch = as_postgres_user()
    if switch is None:
        pytest.skip("running as root, and no 'postgres' or 'nobody' user with runuser/su to run initdb as")
    prefix, user = switch
    # not under pytest's tmp_path: its parents are private to this user
    root = Path(tempfile.mkdtemp(prefix="pg-", dir="/tmp"))
    if user is not None:
        shutil.chown(root, user=user)
    data, port = root / "data", free_port()

    def pg(*cmd: str, timeout: int = 60) -> subprocess.CompletedProcess:
        return subprocess.run([*prefix, *cmd], capture_output=True, text=True, timeout=timeout)

    started = False
    try:
        done = pg(str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                  "--no-sync")
        assert done.returncode == 0, f"initdb failed: {done.stdout[-2000:]}{done.stderr[-2000:]}"
        started = True
        done = pg(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "server.log"), "-w", "-t", "60",
                  "-o", f"-c listen_addresses='' -c unix_socket_directories={root} -p {port} -c fsync=off",
                  "start", timeout=90)
        log = (root / "server.log").read_text() if (root / "server.log").is_file() else ""
        assert done.returncode == 0, f"pg_ctl start failed: {done.stdout[-2000:]}{done.stderr[-2000:]}{log[-2000:]}"
        conn = psycopg2.connect(host=str(root), port=port, user="postgres", dbname="postgres")
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("CREATE DATABASE sweep")
        conn.close()
        yield f"postgresql+psycopg2://postgres@/sweep?host={root}&port={port}"
    finally:
        if started:
            pg(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


def test_a_study_on_a_postgresql_server(tmp_path, tiny_subject, postgres_url):
    out = tmp_path / "out"
    lit_unlearn(sweep_args(space(tmp_path, 2, steps=(2, 4)), out, "--storage", postgres_url), cwd=tmp_path,
                timeout=300)
    study = load(postgres_url)
    assert [t.state for t in study.get_trials()] == [TrialState.COMPLETE] * 2
    assert finished(study) == 2
    assert not (out / "study.db").exists()  # the study lives on the server
    assert (out / "pareto.csv").is_file()
