"""16 concurrent clients, a few jobs each: every result is correct and reaches its own client
(equal to that client's own local answer)."""
import threading

CLIENTS = 16
JOBS_EACH = 3


def _logits(result_bytes):
    from compiler.ir.request import decode_result
    from compiler.ir.values import decode_value

    return decode_value(decode_result(result_bytes))["logits"]


def test_concurrent_clients_get_their_own_results(server, api_key, gpt2):
    import torch

    from nnsight.remote.client import Client

    requests = []
    for i in range(CLIENTS):
        with gpt2.trace("Client number %d says" % i, remote="local") as tracer:
            logits = gpt2.lm_head.output[0][-1].save()  # noqa: F841
        requests.append((tracer.remote_payload, _logits(tracer.remote_result).detach()))
    assert len({tuple(expected.tolist()) for _, expected in requests}) == CLIENTS  # all differ

    failures = []
    delivered = [0] * CLIENTS

    def client_thread(i):
        payload, expected = requests[i]
        try:
            with Client(server.host, api_key) as client:
                for _ in range(JOBS_EACH):
                    job_id = client.submit(payload)["id"]
                    frames = [f["status"] for f in client.events(job_id)]
                    if frames[-1] != "COMPLETED":
                        failures.append((i, frames, client.status(job_id)))
                        continue
                    if not torch.equal(_logits(client.result(job_id)), expected):
                        failures.append((i, "wrong result"))
                        continue
                    delivered[i] += 1
        except Exception as error:  # noqa: BLE001 - reported below
            failures.append((i, repr(error)))

    threads = [threading.Thread(target=client_thread, args=(i,)) for i in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not failures
    assert delivered == [JOBS_EACH] * CLIENTS
    import httpx

    models = httpx.get(server.url + "/v1/models").json()["models"]
    assert models[0]["queue"] == 0  # drained
