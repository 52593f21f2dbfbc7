"""CPU thread budget for the commands that compute (train, eval, route, calibrate, pool add, bench, serve).

torch's default (one intra-op thread per core) oversubscribes a shared machine: on a loaded 2-core box a default
`train` ran for over 10 minutes where one thread took 36 s. The routers' networks are small, so few threads lose
little on an idle machine and win a lot on a busy one."""

from __future__ import annotations

import os

#: More threads than this gain nothing on the routers' small networks (batch 64, d_model 64).
MAX_DEFAULT_THREADS = 4
_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def default_threads() -> int:
    """``RADIALROUTER_THREADS`` or ``OMP_NUM_THREADS`` when set; otherwise the cores not busy with other work
    (core count minus the 1-minute load average), at least 1 and at most `MAX_DEFAULT_THREADS`."""
    for var in ("RADIALROUTER_THREADS", "OMP_NUM_THREADS"):
        value = os.environ.get(var, "").strip()
        if value.isdigit() and int(value) > 0:
            return int(value)
    cores = os.cpu_count() or 1
    try:
        busy = round(os.getloadavg()[0])
    except (AttributeError, OSError):  # not available on Windows
        busy = 0
    return max(1, min(MAX_DEFAULT_THREADS, cores - busy))


def apply_threads(threads: int | None = None) -> int:
    """Use ``threads`` CPU threads (default: `default_threads`) for torch, OpenMP/BLAS (k-means, NumPy) and the
    ONNX encoder. Call before the heavy work starts; returns the number used."""
    if threads is not None and threads < 1:
        raise ValueError(f"--threads must be at least 1; got {threads}")
    n = threads or default_threads()
    for var in _VARS:  # read by OpenMP/BLAS runtimes that start after this (scikit-learn's k-means, NumPy)
        if threads is not None or var not in os.environ:
            os.environ[var] = str(n)
    import torch

    torch.set_num_threads(n)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(n)  # runtimes already started (NumPy's BLAS)
    except ImportError:  # pragma: no cover - scikit-learn brings threadpoolctl
        pass
    return n
