"""A real nnsight-server on loopback running every job in the sandbox (``--sandbox always``)."""
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "server"))

from serverproc import MAX_IN_FLIGHT, MAX_QUEUE, MAX_REQUEST_BYTES, ServerProcess, create_key  # noqa: E402

TIME_LIMIT_S = 4.0  # the per-job wall-clock limit (hostile jobs run past it)
SECRET = "sk-nnsight-test-secret-0123456789"  # in the server's environment; must never reach a job


@pytest.fixture(scope="session")
def server_secret():
    """The secret the sandboxed server's environment holds (a fixture: ``conftest`` is not importable
    by name when several test directories have one)."""
    return SECRET


@pytest.fixture(scope="session")
def server_data(tmp_path_factory):
    return str(tmp_path_factory.mktemp("sandbox-server-data"))


@pytest.fixture(scope="session")
def api_key(server_data):
    return create_key(server_data)


@pytest.fixture(scope="session")
def server(server_data, api_key, gpt2_path):
    os.environ["HF_TOKEN"] = SECRET  # the server inherits it: the sandbox must not
    try:
        proc = ServerProcess(server_data, ["gpt2=%s" % gpt2_path], "--sandbox", "always",
                             "--job-time-limit", str(TIME_LIMIT_S), "--sandbox-memory", "1024",
                             "--max-request-bytes", str(MAX_REQUEST_BYTES), "--max-in-flight", str(MAX_IN_FLIGHT),
                             "--max-queue", str(MAX_QUEUE))
        proc.start()
    finally:
        os.environ.pop("HF_TOKEN", None)
    yield proc
    proc.stop()


@pytest.fixture
def remote_config(server, api_key):
    """CONFIG.API pointed at the sandboxed test server (restored after the test)."""
    from nnsight import CONFIG

    old = (CONFIG.API.HOST, CONFIG.API.APIKEY)
    CONFIG.API.HOST, CONFIG.API.APIKEY = server.host, api_key
    yield CONFIG
    CONFIG.API.HOST, CONFIG.API.APIKEY = old


@pytest.fixture(scope="session")
def gpt2(gpt2_path):
    from nnsight import LanguageModel

    return LanguageModel(gpt2_path)
