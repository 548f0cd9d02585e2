"""The lab's client, run inside the client namespace: writes through the VIP and records what answered.

Each line of output is one attempt: the monotonic time, which Redis answered (its
run_id), and whether the write was acknowledged by a replica (``WAIT 1``). A write
counts as durable only when WAIT reported a replica: what the docs tell clients to do.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, default=6379)
    parser.add_argument("--password-file", required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--interval", type=float, default=0.005)
    parser.add_argument("--wait-ms", type=int, default=100)
    args = parser.parse_args()
    password = open(args.password_file).read().strip()
    client = None
    sequence = 0
    print(json.dumps({"ready": True}), flush=True)
    while True:
        sequence += 1
        key = f"{args.prefix}:{sequence}"
        record = {"t": time.monotonic(), "key": key}
        try:
            if client is None:
                # No silent retries: redis-py would re-send a failed WAIT alone on a new
                # connection, possibly to the other node, where it counts nothing of ours.
                client = redis.Redis(host=args.host, port=args.port, username=args.user, password=password,
                                     socket_timeout=0.2, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))  # fmt: skip
            # The write and its WAIT on one connection, in one round trip (docs/failover.md).
            pipe = client.pipeline(transaction=False)
            pipe.set(key, sequence)
            pipe.execute_command("WAIT", 1, args.wait_ms)
            _, record["acked"] = pipe.execute()
            record["run_id"] = client.info("server")["run_id"]
            replication = client.info("replication")
            record["role"] = replication["role"]
            record["replicas"] = replication.get("connected_slaves", 0)
        except (redis.RedisError, OSError) as exc:
            record["error"] = type(exc).__name__
            if client is not None:
                client.close()
            client = None  # reconnect: the next connection follows the VIP's new ARP entry
        record["done"] = time.monotonic()
        print(json.dumps(record), flush=True)
        time.sleep(args.interval)


if __name__ == "__main__":
    sys.exit(main())
