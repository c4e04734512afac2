"""scikit-learn's clustering scores of labelings given as JSON: [{"labels": [...], "clusters": [...]}].

Prints one JSON object per case: NMI (normalized_mutual_info_score, arithmetic mean, the default),
ARI (adjusted_rand_score), and the accuracy under the best one-to-one matching of clusters to labels
(scipy's linear_sum_assignment on the contingency table, maximised), which is how clustering papers
compute it.
"""
import json
import sys

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
from sklearn.metrics.cluster import contingency_matrix

cases = json.load(open(sys.argv[1]))
out = []
for c in cases:
    y, k = np.array(c["labels"]), np.array(c["clusters"])
    table = contingency_matrix(y, k)
    rows, cols = linear_sum_assignment(table, maximize=True)
    out.append(
        {
            "nmi": float(normalized_mutual_info_score(y, k)),
            "ari": float(adjusted_rand_score(y, k)),
            "accuracy": float(table[rows, cols].sum() / len(y)),
        }
    )
print(json.dumps(out))
