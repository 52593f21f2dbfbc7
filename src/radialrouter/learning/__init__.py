"""Learning from traffic (layer 4): reading the decision log into a training set (`ledger_data`), training on
partially labelled rows (`partial`), the LLM-as-judge rubric and grade parsing (`judge`), off-policy evaluation
(`ope`) and the stochastic serving policy that makes it possible (`exploration`).

It may import layers 0–3 (`core`, `data`, `routers`, `evaluation`, `policy`, `ledger`); not `batch` (same layer),
`serve` or `cli`. The gateway passes its configuration in (``Explorer(config)``); the judge's upstream calls live in
`radialrouter.serve.judging`.
"""
