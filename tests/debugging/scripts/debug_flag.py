"""Run with `python -d`, a config file (NNSIGHT_CONFIG) and NNSIGHT_HOST (tests/debugging/test_config.py)."""
import json

import torch

from nnsight import CONFIG, NNsight

print("CONFIG " + json.dumps({"DEBUG": CONFIG.APP.DEBUG, "CROSS_INVOKER": CONFIG.APP.CROSS_INVOKER,
                              "HOST": CONFIG.API.HOST, "APIKEY": CONFIG.API.APIKEY}), flush=True)
model = NNsight(torch.nn.Sequential(torch.nn.Linear(4, 4)))
x = torch.randn(2, 4)
with model.trace(x):
    picked = model[0].output[100]
