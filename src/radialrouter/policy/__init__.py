"""Pool and budget policy (layer 3): which LLMs to keep in a pool (`pool`) and the λ that meets a cost budget on a
batch or in production (`calibration`).

It may import `radialrouter.core`, `radialrouter.data` and `radialrouter.routers` — not the other layer-3 packages
(`evaluation`, `ledger`) nor anything above.
"""
