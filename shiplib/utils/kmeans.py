"""k-means, fitted the one way the package fits it: sklearn's KMeans with BLAS held to one thread."""
from __future__ import annotations

import numpy as np


def kmeans(x: np.ndarray, k: int, seed: int, n_init="auto"):
    """A fitted `sklearn.cluster.KMeans(n_clusters=k, random_state=seed, n_init=n_init)` on the rows of `x`.

    k-means++ seeding makes many small BLAS calls; multithreaded BLAS spins on them and was measured 8-25x slower
    on a shared 2-core machine, with the same clusters. sklearn's Lloyd loop still uses all cores through OpenMP.
    """
    # deferred: sklearn takes about a second to import and only k-means needs it
    from sklearn.cluster import KMeans
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        return KMeans(n_clusters=int(k), random_state=seed, n_init=n_init).fit(x)
