"""Cells run by a real IPython shell (tests/debugging/test_capture_modes.py)."""
import sys

from IPython.core.interactiveshell import InteractiveShell

shell = InteractiveShell.instance()
shell.colors = "nocolor"

CELLS = {
    "setup": """\
import torch
from nnsight import NNsight
model = NNsight(torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2)))
x = torch.randn(2, 4)""",
    "trace_ok": """\
with model.trace(x):
    hidden = model[0].output.save()
    print("inside the trace")
print("shape", tuple(hidden.shape))""",
    "define": """\
def run(model, x):
    with model.trace(x):
        hidden = model[0].output
        picked = hidden[11]
    return picked""",
    "call": """\
run(model, x)""",
    "cell_error": """\
with model.trace() as tracer:
    with tracer.invoke(x):
        last = model[2].output
        wide = last.reshape(3, 3)""",
    "catch": """\
try:
    run(model, x)
except IndexError as e:
    print("caught", type(e) is IndexError)""",
}

for name, cell in CELLS.items():
    print("===== " + name, flush=True)
    result = shell.run_cell(cell, store_history=True)
    sys.stdout.flush()
    print("success:", result.success, flush=True)
