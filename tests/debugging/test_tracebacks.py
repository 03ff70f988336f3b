"""Exceptions raised in traces, rebuilt against the user's source at every depth.

Most cases run in one subprocess (``scripts/errors.py``) and are rendered by
``sys.excepthook``, as users see them; their text is kept as golden files.
"""
import linecache
import traceback
from pathlib import Path

import pytest
import torch

from compiler.frontend import lower
from dbg_helpers import (
    SCRIPTS,
    assert_clean,
    check_golden,
    exception_line,
    frames,
    line_of,
    normalise,
)
from nnsight import NNsight
from nnsight.tracing import tracebacks

ERRORS = SCRIPTS / "errors.py"
F = "<TMP>/errors.py"

# Cases of errors.py kept as golden files (debug_mode shows nnsight's own line numbers: not kept).
GOLDEN_CASES = [
    "trace_body", "method_invoke", "iteration_body", "backward_body", "session_trace", "session_body",
    "library_function", "several_contexts", "multiline_header", "exec_string", "user_chain", "user_context",
    "out_of_order", "missed_provider", "no_input", "missing_module", "nested_invoke",
    "output_in_backward", "with_block_not_found", "source_not_found", "remote_local",
    "program_from_elsewhere", "uncaught",
]


@pytest.mark.parametrize("name", GOLDEN_CASES)
def test_rendered_traceback_is_clean_and_golden(script_sections, name):
    text = script_sections[name]
    assert text.startswith("Traceback (most recent call last):"), text
    assert_clean(text, own_context=name == "user_context")
    check_golden("script_" + name, text)


def _tail(text, n):
    return [f[1:] for f in frames(text)[-n:]]


def test_iteration_body(script_sections):
    text = script_sections["iteration_body"]
    assert _tail(text, 3) == [
        (line_of(ERRORS, "with model.trace(x) as tracer:", after="def iteration_body():"), "iteration_body",
         "with model.trace(x) as tracer:"),
        (line_of(ERRORS, "with tracer.iter[0]:"), "iteration_body", "with tracer.iter[0]:"),
        (line_of(ERRORS, "picked = hidden[100]", after="with tracer.iter[0]:"), "iteration_body",
         "picked = hidden[100]"),
    ]
    assert exception_line(text).startswith("IndexError")


def test_backward_body(script_sections):
    text = script_sections["backward_body"]
    assert _tail(text, 3) == [
        (line_of(ERRORS, "with model.trace(x):", after="def backward_body():"), "backward_body",
         "with model.trace(x):"),
        (line_of(ERRORS, "with loss.backward():", after="def backward_body():"), "backward_body",
         "with loss.backward():"),
        (line_of(ERRORS, "grad.reshape(9, 9)"), "backward_body", "grad.reshape(9, 9)"),
    ]
    assert exception_line(text).startswith("RuntimeError: shape '[9, 9]'")


def test_session_body(script_sections):
    text = script_sections["session_body"]
    assert _tail(text, 2) == [
        (line_of(ERRORS, "with model.session():", after="def session_body():"), "session_body",
         "with model.session():"),
        (line_of(ERRORS, "total = kept.sum() + missing_name  # noqa: F821"), "session_body",
         "total = kept.sum() + missing_name  # noqa: F821"),
    ]
    assert exception_line(text) == "NameError: name 'missing_name' is not defined"


def test_user_library_function(script_sections):
    text = script_sections["library_function"]
    got = frames(text)
    assert got[-2][1:] == (line_of(ERRORS, "out = mylib.normalize(model[0].output, 2)"), "library_function",
                           "out = mylib.normalize(model[0].output, 2)")
    assert got[-1] == ("<TMP>/mylib.py", line_of(SCRIPTS / "mylib.py", "flat = t.reshape(7, 7)"), "normalize",
                       "flat = t.reshape(7, 7)")


def test_user_exception_chain_is_kept(script_sections):
    text = script_sections["user_chain"]
    first, second = text.split("The above exception was the direct cause of the following exception:")
    assert frames(first)[-1][1:] == (line_of(ERRORS, "picked = model[0].output[50]"), "user_chain",
                                     "picked = model[0].output[50]")
    assert "IndexError: index 50 is out of bounds" in first
    assert frames(second)[-1][3] == 'raise KeyError("no row 50") from err'
    assert exception_line(second) == "KeyError: 'no row 50'"


def test_users_own_implicit_context_is_kept(script_sections):
    """An error in the user's own ``except`` block shows its context, as plain Python would."""
    text = script_sections["user_context"]
    first, second = text.split("During handling of the above exception, another exception occurred:")
    assert frames(first)[-1][3] == "picked = model[0].output[60]"
    assert "IndexError: index 60 is out of bounds" in first
    assert [f[3] for f in frames(second)[-2:]] == ["with model.trace(x):",
                                                  "fallback = missing_fallback  # noqa: F821"]
    assert exception_line(second) == "NameError: name 'missing_fallback' is not defined"
    assert "SkipBody" not in text and "<ROOT>" not in text


def test_original_exception_type_is_catchable(script_sections):
    assert script_sections["catchable"].strip() == "caught IndexError True"


def test_print_inside_a_trace(script_sections):
    assert script_sections["prints"].splitlines() == [
        "inside: before layer 0", "inside: layer 0 shape (2, 4)", "inside: layer 2 shape (2, 2)",
        "after the trace"]


def test_remote_local_captured_function(script_sections):
    text = script_sections["remote_local"]
    got = frames(text)
    assert got[-2][0::3] == (F, "out = mylib.normalize(model[0].output, 2)")
    assert got[-2][1] == line_of(ERRORS, "out = mylib.normalize(model[0].output, 2)", after="def remote_local():")
    assert got[-1] == ("<TMP>/mylib.py", line_of(SCRIPTS / "mylib.py", "flat = t.reshape(7, 7)"), "normalize",
                       "flat = t.reshape(7, 7)")


def test_program_from_elsewhere_points_at_recorded_files(script_sections):
    """The files are gone: the lines come from the IR, registered in linecache."""
    text = script_sections["program_from_elsewhere"]
    got = frames(text)
    assert got[-2][0] == "<TMP>/elsewhere/alice_exp.py"
    assert got[-2][1] == 11 and got[-2][3] == "out = alice_lib.scale(hidden)"
    assert got[-1] == ("<TMP>/elsewhere/alice_lib.py", 2, "scale", "wide = t.reshape(3, 3)")
    assert exception_line(text).startswith("RuntimeError: shape '[3, 3]'")


def test_debug_mode_shows_internal_frames(script_sections):
    text = script_sections["debug_mode"]
    files = {f[0] for f in frames(text)}
    assert "<ROOT>/nnsight/tracing/base.py" in files
    assert frames(text)[-1][3] == "picked = model[0].output[100]"


# ------------------------------------------------------------------ in this process

def _render(exc: BaseException) -> str:
    tb = tracebacks.for_display(exc)
    return normalise("".join(traceback.format_exception(type(exc), exc, tb)))


@pytest.fixture
def model():
    torch.manual_seed(0)
    return NNsight(torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2)))


def test_exception_object_is_the_users_own(model):
    x = torch.randn(2, 4)
    with pytest.raises(IndexError) as info:
        with model.trace(x):
            hidden = model[0].output
            hidden[100]
    exc = info.value
    assert type(exc) is IndexError
    assert getattr(exc, tracebacks.MARK) is True
    text = _render(exc)
    assert_clean(text)
    assert frames(text)[-1][3] == "hidden[100]"


def test_clean_is_idempotent(model):
    x = torch.randn(2, 4)
    try:
        with model.trace(x):
            model[0].output[100]
    except IndexError as e:
        exc = e
    once = _render(exc)
    tracebacks.clean(exc)
    assert _render(exc) == once


def test_register_program_sources(tmp_path):
    missing = str(tmp_path / "gone" / "experiment.py")
    text = "import torch\n\nwith model.trace(x):\n    hidden = model[0].output\n    out = hidden * 2\n"
    program = lower(text, missing, 3)
    try:
        assert tracebacks.register_program_sources(program) == [missing]
        assert linecache.getline(missing, 4).strip() == "hidden = model[0].output"
        assert linecache.getline(missing, 5).strip() == "out = hidden * 2"
        existing = tmp_path / "here.py"
        existing.write_text(text)
        assert tracebacks.register_program_sources(lower(text, str(existing), 3)) == []  # real file
        assert str(existing) not in linecache.cache
    finally:
        linecache.cache.pop(missing, None)


def test_header_frame_reads_like_the_users_line(tmp_path):
    path = tmp_path / "f.py"
    path.write_text("a = 1\n    with tracer.invoke(x):\n")
    frame, lasti, lineno = tracebacks.header_frame(str(path), 2, "run")
    assert (frame.f_code.co_filename, lineno, frame.f_code.co_name) == (str(path), 2, "run")
