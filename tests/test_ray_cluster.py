"""A build on a real two-node Ray cluster survives the loss of a node, and equals a local build.

The cluster is started as a user starts one, with ``ray start``: a head node and a worker node on
this machine, each with its own CPU, resources and loopback address (127.0.0.2 and 127.0.0.3: Ray
(2.60 here) replaces 127.0.0.1 given to ``--node-ip-address`` by the machine's routable address,
``services.resolve_ip_for_localhost``), each in its own session so that one node can be killed
whole. ``zoo-build --executor ray --address`` drives the build from a separate process, as on a
real cluster. No node outlives the test, even a killed test run (``NODE_GUARD``). Skipped where
Ray is not installed (an optional extra) and off Linux (tasks are found through /proc).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch
from _processes import running_task
from test_resume_chunks import same_population

import builders
from builders.build import build_zoo
from zoo_dataset.specs import get_spec
from zoo_dataset.store import ZooStore

pytest.importorskip("ray", reason="Ray is an optional extra (pip install 'zoo-twins[ray]'); not installed")
RAY_CLI = Path(sys.executable).with_name("ray")
pytestmark = [
    pytest.mark.skipif(sys.platform != "linux", reason="finds a node's running tasks in /proc (Linux)"),
    pytest.mark.skipif(not RAY_CLI.exists(), reason=f"no ray command next to {sys.executable}"),
]
SOURCE = Path(builders.__file__).resolve().parents[1]  # the workers import the code under test
NODE_START_S = 180  # a node that has not started by then never will (2 busy cores: ~5 s)
BUILD_HANG_S = 900  # a hang guard, not a speed check: the build takes 30-70 s on 2 busy cores

# digits_seed cut to 8 models in chunks of 2: each stage hands out 4 Ray tasks
ZOOS = """
[zoo.cluster_digits]
dataset = "digits"
architecture = "cnn_s"
variant = "seed"
epochs = 3
batch_size = 10
models_per_shard = 2
mp = { lr = 1e-3, epochs = 1, levels = [0.5] }
vd = { lr = 1e-3, epochs = 1 }

[zoo.cluster_digits.factors]
seeds = { start = 1, count = 8 }
activation = ["tanh"]
optimizer = ["adam"]
lr = [1e-3]
weight_decay = [0.0]
dropout = [0.0]
init = ["kaiming_uniform"]
"""
STAGES = "original,mp"


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


# Runs a node's `ray start --block` in a process group of its own and kills that whole group when
# the node's command exits or the test process ends (its end of the stdin pipe closes), pass, fail
# or SIGKILL. The group, not `ray start`'s own fate sharing, because the agents a raylet spawns
# outlive a killed raylet. (An asynchronous list reads /dev/null unless told otherwise: fd 3.)
NODE_GUARD = """exec 3<&0
"$@" </dev/null &
node=$!
{ cat <&3 >/dev/null; kill -KILL 0; } &
wait "$node"
kill -KILL 0
"""


class Cluster:
    """Ray nodes started by ``ray start --block``, each in a session and process group of its own."""

    def __init__(self, directory: Path):
        self.directory = directory  # short: Ray's socket paths under it must fit in 107 bytes
        token = directory / "token"
        token.write_text(secrets.token_hex(32))
        token.chmod(0o600)
        # token authentication (`ray start` turns it on when a token exists) with a token of this
        # cluster, not ~/.ray/auth_token; the nodes' workers use this process's torch thread count, as the
        # local build they are compared with does, and import the code under test
        self.env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {
            "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token), "PYTHONPATH": str(SOURCE),
            "OMP_NUM_THREADS": str(torch.get_num_threads()),
        }
        self.nodes: dict[str, subprocess.Popen] = {}
        self.drivers: list[subprocess.Popen] = []
        self.address = ""

    def start(self, name: str, ip: str) -> None:
        """Start node ``name`` on ``ip`` with one CPU and a resource named after it; the first is the head."""
        ports = _free_ports(7)
        role = ([f"--address={self.address}"] if self.nodes else
                ["--head", f"--port={ports[6]}", "--include-dashboard=false", f"--dashboard-port={ports[5]}"])
        command = [str(RAY_CLI), "start", *role, "--block", f"--node-ip-address={ip}", "--num-cpus=1",
                   f'--resources={{"{name}": 1}}', "--object-store-memory=100000000", "--disable-usage-stats",
                   f"--temp-dir={self.directory}", f"--node-manager-port={ports[0]}",
                   f"--object-manager-port={ports[1]}", f"--dashboard-agent-listen-port={ports[2]}",
                   f"--dashboard-agent-grpc-port={ports[3]}", f"--metrics-export-port={ports[4]}"]
        log = self.directory / f"{name}.log"
        with open(log, "w") as out:
            node = subprocess.Popen(["sh", "-c", NODE_GUARD, "ray-node", *command], env=self.env, stdout=out,
                                    stderr=subprocess.STDOUT, stdin=subprocess.PIPE, start_new_session=True)
        self.nodes[name] = node
        deadline = time.monotonic() + NODE_START_S
        while "Ray runtime started" not in log.read_text():
            if node.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"ray node {name} did not start:\n" + log.read_text()[-3000:])
            time.sleep(0.2)
        if not self.address:
            self.address = f"{ip}:{ports[6]}"

    def kill(self, name: str) -> None:
        """SIGKILL every process of node ``name`` (ray start, raylet, agents, workers) at once: a lost machine."""
        node = self.nodes.pop(name)
        with contextlib.suppress(ProcessLookupError):  # the whole group has gone already
            os.killpg(node.pid, signal.SIGKILL)
        node.wait()
        node.stdin.close()

    def zoo_build(self, spec_file: Path, root: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
        """``zoo-build`` on this cluster, as a user runs it on the head machine (stopped with the cluster)."""
        command = [sys.executable, "-c", "from builders.cli import main; main()", "--spec", str(spec_file),
                   "--zoo", "cluster_digits", "--stages", STAGES, "--root", str(root), "--executor", "ray",
                   "--address", self.address, "--quiet"]
        self.drivers.append(subprocess.Popen(command, env=env or self.env, stdout=subprocess.PIPE,
                                             stderr=subprocess.PIPE, text=True))
        return self.drivers[-1]

    def stop(self) -> None:
        for driver in self.drivers:
            driver.kill()
            driver.communicate()
        for name in list(self.nodes):
            self.kill(name)


@pytest.fixture
def cluster():
    """A cluster with no node yet; every node the test starts is killed when it ends, pass or fail."""
    directory = Path(tempfile.mkdtemp(prefix="zr-"))
    cluster = Cluster(directory)
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(directory, ignore_errors=True)


def kill_node_while_it_trains(cluster: Cluster, name: str, build: subprocess.Popen) -> bool:
    """Kill node ``name`` as soon as one of its workers runs a training task; False if the build ended first."""
    while build.poll() is None:
        if running_task(cluster.nodes[name].pid, "_train_batch"):
            cluster.kill(name)
            return True
        time.sleep(0.05)
    return False


@pytest.mark.slow
def test_a_build_that_loses_a_node_mid_stage_equals_a_local_build(cluster, tmp_path):
    """The worker node is SIGKILLed while it trains a chunk: Ray runs that task again on the head,
    the build completes, and the store equals a one-process local build bit for bit (tasks are
    whole chunks, so where a chunk trains changes no rounding)."""
    cluster.start("head", "127.0.0.2")
    cluster.start("worker", "127.0.0.3")
    spec_file = tmp_path / "zoos.toml"
    spec_file.write_text(ZOOS)
    build = cluster.zoo_build(spec_file, tmp_path / "ray")
    assert kill_node_while_it_trains(cluster, "worker", build), "the build ended before a task reached the worker"
    _, err = build.communicate(timeout=BUILD_HANG_S)
    assert build.returncode == 0, err[-3000:]
    assert "Traceback" not in err
    spec = get_spec("cluster_digits", spec_file)
    local, _ = build_zoo(spec, tmp_path / "local", stages=STAGES.split(","), progress=False)
    remote = ZooStore(tmp_path / "ray" / "cluster_digits")
    assert remote.populations == local.populations == ["original", "mp"]
    for population in local.populations:
        assert remote.manifest.populations[population].status == "complete"
        same_population(remote, local, population)
    remote.verify()


def test_a_driver_without_the_clusters_token_is_one_line(cluster, tmp_path):
    """A head with token authentication (the default of `ray start`) refuses a driver with another
    token: zoo-build ends with one line that names the likely cause (Ray logs its own retries
    before it), the runtime exit code, and no training."""
    cluster.start("head", "127.0.0.2")
    spec_file = tmp_path / "zoos.toml"
    spec_file.write_text(ZOOS)
    other_token = tmp_path / "other-token"
    other_token.write_text(secrets.token_hex(32))
    # RAY_NUM_REDIS_GET_RETRIES: Ray tries to reach the GCS 20 times, a second apart (ray_constants); 2 suffice here
    env = cluster.env | {"RAY_AUTH_TOKEN_PATH": str(other_token), "RAY_NUM_REDIS_GET_RETRIES": "2"}
    build = cluster.zoo_build(spec_file, tmp_path / "ray", env)
    _, err = build.communicate(timeout=BUILD_HANG_S)
    assert build.returncode == 1
    assert err.strip().splitlines()[-1].startswith(f"error: cannot join the Ray cluster at {cluster.address}: ")
    assert "token" in err.strip().splitlines()[-1] and "Traceback" not in err
    assert not list((tmp_path / "ray").rglob("*.h5"))
