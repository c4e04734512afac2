"""Inception features of raw 8-bit images, computed by PyTorch from the same TorchScript file, for
the cross-check in tests/fid.rs. The preprocessing is written out here independently: grey repeated
to three channels, bilinear resize to 299x299 (align_corners=False), x/128 - 1.

Usage: features.py WEIGHTS IMAGES.u8 N C H W  -> JSON [[2048 floats] * N] on stdout
"""
import json
import sys

import torch
import torch.nn.functional as F

weights, path = sys.argv[1], sys.argv[2]
n, c, h, w = (int(v) for v in sys.argv[3:7])
torch.set_num_threads(2)
raw = open(path, "rb").read()
x = torch.frombuffer(bytearray(raw), dtype=torch.uint8).reshape(n, c, h, w).float()
if c == 1:
    x = x.repeat(1, 3, 1, 1)
x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
net = torch.jit.load(weights).eval()
with torch.no_grad():
    features = net(x / 128.0 - 1.0)
print(json.dumps(features.reshape(n, -1).tolist()))
