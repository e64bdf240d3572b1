"""Speed and memory of exact gallery search at 1k, 100k and 1M gallery entries.

    python benchmarks/bench_gallery.py [--sizes 1000,100000] [--rule best]

Random unit vectors stand in for embeddings (search time does not depend on their values). For each
size: the memory of the embeddings, the time to set the search up, the latency of one query (median)
and the throughput of queries sent together, and the peak memory the search allocates on top.
"""
#------- settings (edit here or override as --name value) -------
sizes = [1000, 100000, 1000000]   # gallery entries
images_per_person = 3             # entries per person (a person's score combines them)
rule = "mean"                     # "best" or "mean" (utils/gallery.RULES)
dimension = 128
single_queries = 30               # one at a time: the median is the latency
batch_queries = 256               # sent together: throughput
seed = 0
#------------------------------------------------------------------
import os
import resource
import sys
import time
import tracemalloc

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np
import torch

from utils.config import configure, print_settings, settings_of
from utils import gallery


def unit_vectors(rng: np.random.Generator, count: int) -> np.ndarray:
    """``count`` random L2-normalised float32 vectors, normalised in place (no float64 copy)."""
    vectors = rng.standard_normal((count, dimension), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors


def main() -> None:
    print_settings(settings_of(globals()))
    print(f"numpy {np.__version__}, {torch.get_num_threads()} torch threads, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
    rng = np.random.default_rng(seed)
    print(f"{'entries':>9} {'people':>8} {'MiB':>7} {'setup s':>8} {'1 query ms':>11} {'batch q/s':>10} "
          f"{'search MiB':>11}")
    for size in sizes:
        embeddings = unit_vectors(rng, size)
        labels = np.arange(size) // images_per_person
        people = [str(i) for i in range(labels[-1] + 1)]
        start = time.perf_counter()
        search = gallery.PersonSearch(embeddings, labels, people, rule)
        setup = time.perf_counter() - start
        queries = unit_vectors(rng, max(single_queries, batch_queries))
        latencies = []
        for query in queries[:single_queries]:
            start = time.perf_counter()
            search.nearest(query[None])
            latencies.append(time.perf_counter() - start)
        tracemalloc.start()
        start = time.perf_counter()
        search.nearest(queries[:batch_queries])
        batch = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        print(f"{size:>9} {len(people):>8} {embeddings.nbytes / 2**20:>7.1f} {setup:>8.3f} "
              f"{np.median(latencies) * 1e3:>11.2f} {batch_queries / batch:>10.0f} {peak / 2**20:>11.1f}")
        del search, embeddings
    print(f"peak resident memory of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    configure(globals())
    main()
