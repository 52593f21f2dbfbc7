"""The foundation (layer 0): the routing objective and the scoring helpers (`objective`, `scoring`), the training loop
(`training`), query encoders (`encoders`: transformer, static, cache), tokenizers (`tokens`), thread limits
(`threads`) and the static-encoder distillation (`distill`).

It imports no other radialrouter package: everything else builds on it.
"""
