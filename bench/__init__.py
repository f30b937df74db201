"""bench: side-by-side benchmarks, tables and plots."""

import os as _os

# Before numpy loads (``python -m bench`` and ``python -m bench.decoding`` import this first): one
# OpenBLAS thread, as the runtime has (edge/__main__.py): spinning BLAS workers halve ONNX Runtime's
# speed on a 2-core machine after each retrieval search.
_os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
