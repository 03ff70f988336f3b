"""Errors at every depth of a trace, rendered by sys.excepthook (tests/debugging/test_tracebacks.py).

Each case prints "===== <name>" and then what the user would see. Line numbers
matter: the tests find the expected lines by their text.
"""
import linecache
import os
import sys

import torch

from nnsight import CONFIG, NNsight

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mylib  # noqa: E402

torch.manual_seed(0)
net = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
model = NNsight(net)
x = torch.randn(2, 4)
CASES = []


def case(fn):
    CASES.append(fn)
    return fn


def show(fn):
    print("===== " + fn.__name__, flush=True)
    try:
        fn()
    except BaseException as e:
        sys.excepthook(type(e), e, e.__traceback__)
    sys.stderr.flush()
    sys.stdout.flush()


@case
def trace_body():
    with model.trace(x):
        hidden = model[0].output
        picked = hidden[100]


class Experiment:
    def run(self, data):
        with model.trace() as tracer:
            with tracer.invoke(data):
                first = model[0].output.save()
            with tracer.invoke(data):
                second = model[2].output
                second.reshape(5, 5)
        return first


@case
def method_invoke():
    Experiment().run(x)


@case
def iteration_body():
    with model.trace(x) as tracer:
        with tracer.iter[0]:
            hidden = model[0].output
            picked = hidden[100]


@case
def backward_body():
    with model.trace(x):
        hidden = model[0].output
        loss = model.output.sum()
        with loss.backward():
            grad = hidden.grad
            grad.reshape(9, 9)


@case
def session_trace():
    with model.session():
        with model.trace(x):
            kept = model[0].output
        with model.trace(x):
            picked = kept[100]


@case
def session_body():
    with model.session():
        with model.trace(x):
            kept = model[0].output.save()
        total = kept.sum() + missing_name  # noqa: F821


@case
def library_function():
    with model.trace(x):
        out = mylib.normalize(model[0].output, 2)


@case
def several_contexts():
    with model.trace(x), torch.no_grad():
        hidden = model[0].output
        picked = hidden[7]


@case
def multiline_header():
    with model.trace(
        x,
    ) as tracer:
        hidden = model[0].output
        picked = hidden[8]


@case
def exec_string():
    src = "with model.trace(x):\n    hidden = model[0].output\n    picked = hidden[9]\n"
    linecache.cache["<experiment>"] = (len(src), None, src.splitlines(True), "<experiment>")
    exec(compile(src, "<experiment>", "exec"), {"model": model, "x": x})


@case
def user_chain():
    with model.trace(x):
        try:
            picked = model[0].output[50]
        except IndexError as err:
            raise KeyError("no row 50") from err


@case
def user_context():
    with model.trace(x):
        try:
            picked = model[0].output[60]
        except IndexError:
            fallback = missing_fallback  # noqa: F821


@case
def catchable():
    try:
        with model.trace(x):
            picked = model[0].output[100]
    except IndexError as e:
        print("caught", type(e).__name__, type(e) is IndexError)


@case
def prints():
    with model.trace(x):
        print("inside: before layer 0")
        hidden = model[0].output
        print("inside: layer 0 shape", tuple(hidden.shape))
        out = model[2].output
        print("inside: layer 2 shape", tuple(out.shape))
    print("after the trace")


# ------------------------------------------------------------ common errors

@case
def out_of_order():
    with model.trace(x):
        later = model[2].output
        earlier = model[0].output


@case
def missed_provider():
    with model.trace(x):
        first = model[0].output
        last = model[2].output
        loss = last.sum()
        with loss.backward():
            grad_first = first.grad
            grad_last = last.grad


@case
def no_input():
    with model.trace():
        hidden = model[0].output.save()


@case
def missing_module():
    with model.trace(x):
        hidden = model.fake_layer.output.save()


@case
def nested_invoke():
    with model.trace() as tracer:
        with tracer.invoke(x):
            with tracer.invoke(x):
                hidden = model[0].output


@case
def output_in_backward():
    with model.trace(x):
        hidden = model[0].output
        loss = model.output.sum()
        with loss.backward():
            other = model[2].output


@case
def with_block_not_found():
    tracer = model.trace(x)
    tracer.__enter__()


@case
def source_not_found():
    src = "with model.trace(x):\n    hidden = model[0].output\n"
    exec(compile(src, "<nowhere>", "exec"), {"model": model, "x": x})


# ------------------------------------------------------------ remote='local' and programs from elsewhere

@case
def remote_local():
    with model.trace(x, remote="local"):
        out = mylib.normalize(model[0].output, 2)


ELSEWHERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "elsewhere")
ALICE = '''\
import alice_lib

LAST = None


def run(model, x):
    global LAST
    LAST = model.trace(x, remote="local")
    with LAST:
        hidden = model[0].output
        out = alice_lib.scale(hidden)
'''
ALICE_LIB = '''\
def scale(t):
    wide = t.reshape(3, 3)
    return wide * 2
'''


@case
def program_from_elsewhere():
    """The request of a failing trace, run again after its files are gone (as on a server)."""
    import shutil

    from compiler.ir.request import decode_request
    from nnsight.tracing.remote import LocalServer

    os.makedirs(ELSEWHERE, exist_ok=True)
    for name, text in (("alice_exp.py", ALICE), ("alice_lib.py", ALICE_LIB)):
        with open(os.path.join(ELSEWHERE, name), "w") as f:
            f.write(text)
    sys.path.insert(0, ELSEWHERE)
    import alice_exp

    try:
        alice_exp.run(model, x)
    except RuntimeError:
        pass
    payload = alice_exp.LAST.remote_payload
    shutil.rmtree(ELSEWHERE)
    sys.path.remove(ELSEWHERE)
    for name in ("alice_exp", "alice_lib"):
        sys.modules.pop(name, None)
    linecache.clearcache()
    server = LocalServer()
    server.host(decode_request(payload).model, model)
    server.handle(payload)


# ------------------------------------------------------------ DEBUG

@case
def debug_mode():
    CONFIG.APP.DEBUG = True
    try:
        with model.trace(x):
            picked = model[0].output[100]
    finally:
        CONFIG.APP.DEBUG = False


for fn in CASES:
    show(fn)

print("===== uncaught", flush=True)
Experiment().run(x)
