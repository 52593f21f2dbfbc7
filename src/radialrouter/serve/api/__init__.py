"""The gateway's HTTP endpoints, one module per group: `chat` (``/v1/chat/completions``, ``/v1/models``), `route`
(``/v1/route``), `feedback` (``/v1/feedback``), `health` (``/healthz``, ``/readyz``), `status` (``/health``,
``/metrics``), `admin` (router hot swap: ``/admin/...``), `openapi` (the published schema) and `validation` (request
bodies checked before they reach shared machinery).

Each module builds an ``APIRouter`` from the `radialrouter.serve.state.ServeState` it is given; none imports the app
(`radialrouter.serve.app` imports them). Part of `radialrouter.serve` (layer 5): may import layers 0–4.
"""
