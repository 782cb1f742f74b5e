"""`prunedyn sweep --backend ray`: the same sweep on a real local Ray cluster (a head and a worker node).

The cluster is started by the test itself (`ray start --block`, each node in its own process group)
and torn down by killing those process groups, so nothing else on the machine is touched."""
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest

from prunedyn.run.backends import BackendError, execute, import_ray, ray_resources
from prunedyn.run.sweeps import load_spec, run_sweep
from conftest import SMALL, prunedyn_cmd, run_cli

needs_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                               reason="ray is not installed (pip install 'prunedyn[ray]')")

SPEC = """
base: mlp-mnist
set: {common}
grid: {{regularizer.kind: [l2, l1]}}
seeds: [0, 1]
"""


def test_ray_resources_ask_for_a_gpu_only_where_the_run_can_use_one():
    assert ray_resources("cuda", 1, cluster_gpus=2) == {"num_gpus": 1, "num_cpus": 1}
    assert ray_resources("auto", 1, cluster_gpus=1) == {"num_gpus": 1, "num_cpus": 1}
    assert ray_resources("auto", 1, cluster_gpus=0) == {"num_gpus": 0, "num_cpus": 1}
    assert ray_resources("cpu", 4, cluster_gpus=8) == {"num_gpus": 0, "num_cpus": 4}
    assert ray_resources("cpu", 0, cluster_gpus=0) == {"num_gpus": 0, "num_cpus": 1}  # 0: torch's default


def test_missing_ray_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    with pytest.raises(BackendError, match=r"prunedyn\[ray\]"):
        import_ray()


def test_unknown_backend_is_rejected_before_running():
    with pytest.raises(BackendError, match="unknown sweep backend 'dask'"):
        execute(print, [], backend="dask")


@pytest.mark.slow
def test_cli_address_needs_the_ray_backend(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text("base: mlp-mnist\n")
    res = run_cli("sweep", spec, "--address", "ray://nowhere:10001", "--out", tmp_path / "out")
    assert res.returncode == 2 and "--address is for --backend ray" in res.stderr


# Hermetic: no token auth, whatever ~/.ray/auth_token an earlier local `ray.init()` left behind.
RAY_ENV = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_node(args, log: Path, timeout=120) -> subprocess.Popen:
    """`ray start --block ...` in its own process group; returns once the node is up."""
    ray_cli = Path(sys.executable).parent / "ray"
    handle = open(log, "w")
    proc = subprocess.Popen([str(ray_cli), "start", "--block", "--disable-usage-stats", "--node-ip-address", "127.0.0.1",
                             "--object-store-memory", "100000000", "--num-cpus", "1",
                             "--dashboard-agent-listen-port", str(_free_port()), *args],
                            stdout=handle, stderr=subprocess.STDOUT, start_new_session=True, env=RAY_ENV)
    deadline = time.time() + timeout
    while "Ray runtime started" not in log.read_text():
        if proc.poll() is not None or time.time() > deadline:
            _stop_node(proc)
            pytest.fail(f"ray start failed:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)
    return proc


def _stop_node(proc: subprocess.Popen):
    """Stop one node: SIGTERM to its process group (raylet, GCS, agents, workers), SIGKILL what is left."""
    for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the node's processes outlive `ray start` after SIGTERM
    except ProcessLookupError:
        pass
    proc.wait()


@pytest.fixture(scope="module")
def ray_cluster():
    """A two-node Ray cluster on this machine (1 CPU each); yields its address."""
    temp = Path(tempfile.mkdtemp(prefix="prdray", dir="/tmp"))  # short: Ray's socket paths live under it
    port = _free_port()
    nodes = []
    try:
        nodes.append(_start_node(["--head", "--port", str(port), "--include-dashboard=false",
                                  "--ray-client-server-port", str(_free_port()), "--temp-dir", str(temp)],
                                 temp / "head.log"))
        nodes.append(_start_node(["--address", f"127.0.0.1:{port}"], temp / "worker.log"))
        yield f"127.0.0.1:{port}"
    finally:
        for proc in reversed(nodes):
            _stop_node(proc)
        shutil.rmtree(temp, ignore_errors=True)


@needs_ray
@pytest.mark.slow
def test_killed_ray_sweep_restarts_and_matches_the_process_pool(tmp_path, ray_cluster):
    common = json.dumps([*SMALL, "epochs=3", "data.train_size=2000"])
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(SPEC.format(common=common))
    out = tmp_path / "ray"
    env = {**RAY_ENV, "RAY_ADDRESS": ray_cluster}
    log = tmp_path / "killed.log"
    with open(log, "w") as handle:
        proc = subprocess.Popen(prunedyn_cmd("sweep", spec_path, "--out", out, "--backend", "ray", "--quiet"),
                                stdout=handle, stderr=subprocess.STDOUT, env=env)
    deadline = time.time() + 300
    while time.time() < deadline and not list(out.glob("*/summary.json")) and proc.poll() is None:
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = {p: p.stat().st_mtime_ns for p in out.glob("*/summary.json")}
    assert 1 <= len(finished) < 4, log.read_text()[-2000:]

    res = run_cli("sweep", spec_path, "--out", out, "--backend", "ray", "--quiet", env=env)
    assert res.returncode == 0, res.stderr
    assert {p: p.stat().st_mtime_ns for p in finished} == finished  # finished runs not redone
    on_ray = pd.read_csv(out / "summary.csv")
    assert len(on_ray) == 4 and (on_ray["epochs_completed"] == 3).all()

    table = run_sweep(load_spec(spec_path), tmp_path / "process", workers=2, progress=False)
    assert table["run"].tolist() == on_ray["run"].tolist()  # the same folders, by config hash
    assert (tmp_path / "process" / "summary.csv").read_text() == (out / "summary.csv").read_text()


@needs_ray
def test_unreachable_cluster_fails_fast_with_its_address(tmp_path):
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(SPEC.format(common=json.dumps(SMALL)))
    address = f"127.0.0.1:{_free_port()}"  # nobody listens there
    tic = time.time()
    with pytest.raises(BackendError, match=f"cannot connect to the Ray cluster at {address}"):
        run_sweep(load_spec(spec_path), tmp_path / "out", backend="ray", address=address, progress=False)
    assert time.time() - tic < 30 and not list((tmp_path / "out").glob("mlp-mnist-*"))


def _descendants(root: int) -> dict:
    """``{pid: start time}`` of every process descended from ``root`` (from /proc)."""
    table = {}
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                fields = (p / "stat").read_text().rsplit(")", 1)[1].split()
                table[int(p.name)] = (int(fields[1]), fields[19])
            except (OSError, IndexError, ValueError):
                pass
    out, todo = {}, [root]
    while todo:
        parent = todo.pop()
        for pid, (ppid, start) in table.items():
            if ppid == parent and pid not in out:
                out[pid] = start
                todo.append(pid)
    return out


def _alive(pid: int, start: str) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19] == start
    except (OSError, IndexError):
        return False


@needs_ray
@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_killing_a_sweep_on_a_local_ray_instance_leaves_no_ray_process(tmp_path):
    """Ray started by the sweep itself (no address): SIGKILL the sweep while its tasks train, and none of
    the processes it started (GCS, raylet, workers, and Ray's agents, which outlive the driver without
    prunedyn's reaper) is still running 30 s later."""
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(SPEC.format(common=json.dumps([*SMALL, "epochs=50"])))
    env = {k: v for k, v in RAY_ENV.items() if k != "RAY_ADDRESS"}
    proc = subprocess.Popen(prunedyn_cmd("sweep", spec_path, "--out", tmp_path / "o", "--backend", "ray",
                                         "--workers", "2", "--quiet"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline, started = time.time() + 180, {}
    while time.time() < deadline and proc.poll() is None:
        started.update(_descendants(proc.pid))
        if any(b"ray::" in Path(f"/proc/{p}/cmdline").read_bytes() for p in started if Path(f"/proc/{p}").exists()):
            time.sleep(2)  # the tasks are running
            started.update(_descendants(proc.pid))
            break
        time.sleep(0.2)
    assert started and proc.poll() is None, "the local Ray instance did not start"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 30
    while time.time() < deadline and any(_alive(p, s) for p, s in started.items()):
        time.sleep(0.5)
    alive = [p for p, s in started.items() if _alive(p, s)]
    names = [Path(f"/proc/{p}/cmdline").read_bytes()[:40] for p in alive if Path(f"/proc/{p}").exists()]
    for p in alive:
        try:
            os.kill(p, signal.SIGKILL)
        except OSError:
            pass
    assert not alive, f"processes outlived the sweep: {names}"
