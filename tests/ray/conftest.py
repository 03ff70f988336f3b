"""A real two-node Ray cluster on this machine and an ``nnsight-server serve --ray`` front on it.

Module-scoped, and every Ray test lives in one module: the cluster is gone before the next test
module runs (a later ``ray.init(address="auto")``, as the vLLM Ray executor does, would join any
Ray cluster still running on the machine)."""
import os
import shutil
import sys
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "server"))

from raycluster import RayCluster, ray_env  # noqa: E402
from serverproc import ServerProcess, create_key  # noqa: E402

TIME_LIMIT_S = 60.0


def pytest_collection_modifyitems(items):
    here = os.path.dirname(os.path.abspath(__file__))
    for item in items:
        if str(item.fspath).startswith(here):
            item.add_marker(pytest.mark.ray)


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    pytest.importorskip("ray", reason="ray is not installed")
    # a short path: Ray's socket paths must fit in 107 bytes
    temp_dir = "/tmp/nnsight-ray-%d" % os.getpid()
    cluster = RayCluster(temp_dir)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
    # a SIGKILLed process still runs its exit (freeing its memory) for a moment: wait for that,
    # boundedly (observed once: the GCS server not yet a zombie right after the kill)
    deadline = time.monotonic() + 10.0
    left = cluster.leftover_processes()
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = cluster.leftover_processes()
    assert not left, "Ray processes left running:\n" + "\n".join(left)
    shutil.rmtree(temp_dir, ignore_errors=True)  # the cluster's logs and session files


@pytest.fixture(scope="module")
def ray_server_data(tmp_path_factory):
    return str(tmp_path_factory.mktemp("ray-server-data"))


@pytest.fixture(scope="module")
def ray_api_key(ray_server_data):
    return create_key(ray_server_data, "tests", "--tier", "trusted")  # replicas serve trusted keys only


@pytest.fixture(scope="module")
def ray_server(ray_cluster, ray_server_data, ray_api_key, gpt2_path):
    """The front, with two replicas of the tiny GPT-2 (one per node: each node has one CPU)."""
    proc = ServerProcess(ray_server_data, ["gpt2=%s" % gpt2_path], "--ray", "--address", ray_cluster.address,
                         "--replicas", "2", "--resources", "gpt2:num_cpus=1", "--job-time-limit", str(TIME_LIMIT_S))
    saved = dict(os.environ)
    os.environ.update({k: v for k, v in ray_env().items() if k.startswith("RAY_")})  # inherited by the front
    try:
        proc.start(timeout=300.0)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    yield proc
    proc.stop()


@pytest.fixture
def ray_remote(ray_server, ray_api_key):
    """CONFIG.API pointed at the Ray-backed server (restored after the test)."""
    from nnsight import CONFIG

    old = (CONFIG.API.HOST, CONFIG.API.APIKEY)
    CONFIG.API.HOST, CONFIG.API.APIKEY = ray_server.host, ray_api_key
    yield CONFIG
    CONFIG.API.HOST, CONFIG.API.APIKEY = old


@pytest.fixture
def remote_config(ray_remote):
    """The name tests/server's suites use for the server they talk to: here, the Ray front."""
    return ray_remote


@pytest.fixture(scope="session")
def gpt2(gpt2_path):
    from nnsight import LanguageModel

    return LanguageModel(gpt2_path)
