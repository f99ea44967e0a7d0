"""Transfer methods other than a fitted U: the interface (:mod:`.base`), one file per method, the registry (:mod:`.registry`).

A transfer method carries a source task vector into the target by its own rule (a
mask, a projection, ...) and says which inputs it needs; the benchmark runs it as a row
beside the alignment strategies, with the same controls, seeds and held-out lambda.
"""
