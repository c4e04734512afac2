"""Precision and recall of two feature sets by `prdc` (the oracle of tests/metrics.rs).

argv: the features' safetensors file (tensors `real` and `fake`, float64), k. Prints JSON.
"""
import json
import sys

import numpy as np
from prdc import compute_prdc
from safetensors.numpy import load_file

tensors = load_file(sys.argv[1])
k = int(sys.argv[2])
out = compute_prdc(real_features=tensors["real"], fake_features=tensors["fake"], nearest_k=k)
print(json.dumps({"precision": float(out["precision"]), "recall": float(out["recall"])}))
