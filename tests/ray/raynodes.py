"""Run a Ray head and a second node on this machine, both on 127.0.0.1, until SIGTERM.

Started as a script by ``raycluster.RayCluster`` (``python raynodes.py TEMP_DIR PORT CPUS STORE_BYTES``),
in its own process group. It uses Ray's testing cluster (``ray.cluster_utils.Cluster``) rather
than ``ray start``: every Ray server (GCS, raylet, object manager, workers' gRPC servers, agents)
binds 127.0.0.1 only when its node's address is exactly ``127.0.0.1``, and ``ray start`` replaces
``--node-ip-address 127.0.0.1`` with the machine's own address wherever multi-node clusters are
enabled (Linux), so its servers listen on every interface. No dashboard and no Ray Client server
are started. Prints ``ready HOST:PORT`` once both nodes are up.
"""
import signal
import sys
import threading


def main(temp_dir: str, port: int, cpus: int, store_bytes: int) -> None:
    from ray.cluster_utils import Cluster

    node = dict(node_ip_address="127.0.0.1", num_cpus=cpus, num_gpus=0, object_store_memory=store_bytes)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    cluster = Cluster(initialize_head=True,
                      head_node_args=dict(node, gcs_server_port=port, include_dashboard=False, temp_dir=temp_dir))
    try:
        cluster.add_node(**node)
        print("ready %s" % cluster.address, flush=True)
        stop.wait()
    finally:
        cluster.shutdown()
    print("stopped", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
