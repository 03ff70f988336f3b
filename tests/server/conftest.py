"""A real nnsight-server on loopback (a subprocess) hosting the tiny GPT-2, shared by the tests."""
import pytest

from serverproc import MAX_IN_FLIGHT, MAX_QUEUE, MAX_REQUEST_BYTES, ServerProcess, create_key

TIME_LIMIT_S = 3.0  # the server's per-job wall-clock limit (a test job loops past it)


@pytest.fixture(scope="session")
def server_data(tmp_path_factory):
    return str(tmp_path_factory.mktemp("server-data"))


@pytest.fixture(scope="session")
def api_key(server_data):
    return create_key(server_data, "tests", "--tier", "trusted")  # tests/sandbox runs these suites untrusted


@pytest.fixture(scope="session")
def server(server_data, api_key, gpt2_path):
    proc = ServerProcess(server_data, ["gpt2=%s" % gpt2_path], "--job-time-limit", str(TIME_LIMIT_S),
                         "--max-request-bytes", str(MAX_REQUEST_BYTES), "--max-in-flight", str(MAX_IN_FLIGHT),
                         "--max-queue", str(MAX_QUEUE))
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture
def remote_config(server, api_key):
    """CONFIG.API pointed at the test server (restored after the test)."""
    from nnsight import CONFIG

    old = (CONFIG.API.HOST, CONFIG.API.APIKEY)
    CONFIG.API.HOST, CONFIG.API.APIKEY = server.host, api_key
    yield CONFIG
    CONFIG.API.HOST, CONFIG.API.APIKEY = old


@pytest.fixture(scope="session")
def gpt2(gpt2_path):
    from nnsight import LanguageModel

    return LanguageModel(gpt2_path)
