"""The cyclic garbage collector, tuned for a long-running server once its startup is done.

CPython collects its youngest generation whenever tracked objects allocated minus those freed
pass 700. A busy router keeps more than that alive at any moment (each request in flight holds
its headers, futures and coroutine frames), so it collected every few requests: measured under
``bench/queue_throughput.py``, about 7 us of router CPU per queue round trip, 5% of it, walking
objects that reference counting was about to free anyway. And every full collection walked
everything loaded at startup (modules, the app, a runner's model), none of which ever becomes
garbage.
"""

from __future__ import annotations

import gc

# Objects allocated (net) before the youngest generation is collected; CPython's default is 700.
# Above what requests in flight hold at once, so collections come from garbage that lingers.
YOUNG_THRESHOLD = 10_000


def settle(young_threshold: int = YOUNG_THRESHOLD) -> None:
    """Call once startup is done: what is alive now is frozen out of collections
    (``gc.freeze``), and the youngest generation is collected less often.

    Reference cycles made from here on are still collected. There is no collection first: in a
    runner that would add its length (16 ms with nothing loaded, far more with a model) to
    every cold start, to free the few cycles startup left. This changes the whole process, so
    only the process's own entry point calls it (``yurt run``, ``yurt server``, a runner).
    """
    gc.freeze()
    young, middle, old = gc.get_threshold()
    if young:  # 0: collection is disabled, and stays so
        gc.set_threshold(max(young, young_threshold), middle, old)
