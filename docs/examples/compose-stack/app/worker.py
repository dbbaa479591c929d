"""The worker: takes the jobs web queues in Redis and counts them done."""

import os

from resp import Redis

# No socket timeout: BRPOP blocks until a job comes.
redis = Redis(os.environ["REDIS_URL"], timeout=None)
print("worker: waiting for jobs", flush=True)
while True:
    job = redis.call("BRPOP", "jobs", "0")
    redis.call("INCR", "jobs:done")
    print(f"worker: did {job[1]}", flush=True)
