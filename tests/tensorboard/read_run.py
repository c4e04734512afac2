"""Reads a run directory with TensorBoard's EventAccumulator and prints what it holds as JSON:
scalars (tag -> [[step, value]]), images (tag -> [[step, width, height]]) and text (tag -> str).

Usage: read_run.py RUN_DIR
"""
import json
import sys

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.util import tensor_util

acc = EventAccumulator(sys.argv[1], size_guidance={"scalars": 0, "images": 0, "tensors": 0})
acc.Reload()
tags = acc.Tags()
out = {
    "scalars": {t: [[e.step, e.value] for e in acc.Scalars(t)] for t in tags["scalars"]},
    "images": {t: [[e.step, e.width, e.height] for e in acc.Images(t)] for t in tags["images"]},
    "text": {},
}
for t in tags["tensors"]:
    if acc.SummaryMetadata(t).plugin_data.plugin_name == "text":
        array = tensor_util.make_ndarray(acc.Tensors(t)[0].tensor_proto)
        out["text"][t] = array.item().decode() if array.shape == () else array.flat[0].decode()
print(json.dumps(out))
