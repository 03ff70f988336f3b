"""Where the client finds the server and its key: CONFIG.API, NNSIGHT_* / NDIF_* variables, login()."""
from nnsight.config import Config


def test_ndif_variables_are_read_and_nnsight_ones_win(tmp_path):
    path = str(tmp_path / "config.json")
    config = Config().load(path, environ={"NDIF_HOST": "ndif.example:9000", "NDIF_API_KEY": "k1"})
    assert (config.API.HOST, config.API.APIKEY) == ("ndif.example:9000", "k1")
    config = Config().load(path, environ={"NDIF_HOST": "a:1", "NNSIGHT_HOST": "b:2"})
    assert config.API.HOST == "b:2"


def test_login_sets_the_key_the_client_sends(monkeypatch):
    import nnsight
    from nnsight import CONFIG
    from nnsight.remote.client import Client

    monkeypatch.setattr(CONFIG.API, "APIKEY", CONFIG.API.APIKEY)
    monkeypatch.setattr(CONFIG.API, "HOST", CONFIG.API.HOST)
    nnsight.login("nns_example", host="127.0.0.1:1", save=False)
    client = Client()
    assert client.url == "http://127.0.0.1:1" and client.headers["ndif-api-key"] == "nns_example"
    client.close()

