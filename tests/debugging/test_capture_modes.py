"""Source capture wherever a trace can be written, checked through the tracebacks users see.

Each mode runs for real: a script file, a function and a method, traces nested
in a session, ``exec`` of a string registered in ``linecache``, ``python -c``,
an IPython shell, and the classic ``python`` REPL in a pseudo-terminal. Every
test asserts on the printed traceback: file, line number, source line and
exception type.
"""
import sys

import pytest

from dbg_helpers import (
    DASH_C,
    SCRIPTS,
    assert_clean,
    check_golden,
    child_env,
    exception_line,
    frames,
    line_of,
    normalise,
    sections,
)

ERRORS = SCRIPTS / "errors.py"
F = "<TMP>/errors.py"


def _user_frames(text):
    return [f for f in frames(text) if f[0] == F]


# ------------------------------------------------------------------ a script file

def test_script_module_level_uncaught(script_sections):
    text = script_sections["uncaught"]
    assert text.startswith("Traceback (most recent call last):"), text
    got = frames(text)
    last = line_of(ERRORS, "Experiment().run(x)", after='print("===== uncaught", flush=True)')
    assert got[0] == (F, last, "<module>", "Experiment().run(x)")
    assert got[-1] == (F, line_of(ERRORS, "second.reshape(5, 5)"), "run", "second.reshape(5, 5)")
    assert exception_line(text).startswith("RuntimeError: shape '[5, 5]' is invalid")
    assert_clean(text)


def test_script_function(script_sections):
    text = script_sections["trace_body"]
    got = _user_frames(text)
    assert got[-2] == (F, line_of(ERRORS, "with model.trace(x):", after="def trace_body():"), "trace_body", "with model.trace(x):")
    assert got[-1] == (F, line_of(ERRORS, "picked = hidden[100]"), "trace_body", "picked = hidden[100]")
    assert exception_line(text).startswith("IndexError: index 100 is out of bounds")
    assert_clean(text)


def test_script_method_with_invokes(script_sections):
    text = script_sections["method_invoke"]
    got = _user_frames(text)
    # trace header -> the invoke's header (put back: the invoke ran after the trace body) -> the line
    assert [f[1:] for f in got[-3:]] == [
        (line_of(ERRORS, "with model.trace() as tracer:"), "run", "with model.trace() as tracer:"),
        (line_of(ERRORS, "with tracer.invoke(data):", after="first = model[0].output.save()"), "run", "with tracer.invoke(data):"),
        (line_of(ERRORS, "second.reshape(5, 5)"), "run", "second.reshape(5, 5)"),
    ]
    assert_clean(text)


def test_trace_nested_in_session(script_sections):
    text = script_sections["session_trace"]
    got = _user_frames(text)
    assert [f[1] for f in got[-3:]] == [line_of(ERRORS, "with model.session():"),
                                          line_of(ERRORS, "with model.trace(x):", after="kept = model[0].output"),
                                          line_of(ERRORS, "picked = kept[100]")]
    assert got[-1][3] == "picked = kept[100]"
    assert exception_line(text).startswith("IndexError")
    assert_clean(text)


def test_several_contexts_in_one_with(script_sections):
    text = script_sections["several_contexts"]
    got = _user_frames(text)
    assert got[-2][3] == "with model.trace(x), torch.no_grad():"
    assert got[-1] == (F, line_of(ERRORS, "picked = hidden[7]"), "several_contexts", "picked = hidden[7]")
    assert_clean(text)


def test_multi_line_with_header(script_sections):
    text = script_sections["multiline_header"]
    got = _user_frames(text)
    assert got[-2][1:] == (line_of(ERRORS, "with model.trace("), "multiline_header", "with model.trace(")
    assert got[-1][1:] == (line_of(ERRORS, "picked = hidden[8]"), "multiline_header", "picked = hidden[8]")
    assert_clean(text)


def test_exec_of_a_string_registered_in_linecache(script_sections):
    text = script_sections["exec_string"]
    got = frames(text)
    assert got[-2] == ("<experiment>", 1, "<module>", "with model.trace(x):")
    assert got[-1] == ("<experiment>", 3, "<module>", "picked = hidden[9]")
    assert exception_line(text).startswith("IndexError: index 9")
    assert_clean(text)


# ------------------------------------------------------------------ python -c

def test_python_dash_c(runs):
    code, out, err = runs["dash_c"]
    assert code == 1
    assert "shape (2, 4)" in out
    lines = DASH_C.splitlines()
    got = frames(err)
    assert got == [
        ("<string>", lines.index("with model.trace(x):", 6) + 1, "<module>", "with model.trace(x):"),
        ("<string>", lines.index("    picked = model[0].output[7]") + 1, "<module>", "picked = model[0].output[7]"),
    ]
    assert exception_line(err).startswith("IndexError: index 7 is out of bounds")
    assert_clean(err)
    check_golden("python_dash_c", err)


# ------------------------------------------------------------------ IPython

@pytest.fixture(scope="module")
def ipython_sections(runs):
    code, out, _ = runs["ipython"]
    assert code == 0, out
    return sections(out)


def test_ipython_cells(ipython_sections):
    assert "inside the trace\nshape (2, 4)\nsuccess: True" in ipython_sections["trace_ok"]
    assert "caught True" in ipython_sections["catch"]
    for name in ("call", "cell_error"):
        assert "success: False" in ipython_sections[name]
        assert_clean(ipython_sections[name])


def test_ipython_traceback_of_a_function_defined_in_an_earlier_cell(ipython_sections):
    text = ipython_sections["call"]
    assert "Cell In[4], line 1\n----> 1 run(model, x)" in text
    assert "Cell In[3], line 2, in run(model, x)" in text
    assert "----> 2     with model.trace(x):" in text
    assert "Cell In[3], line 4, in run" in text
    assert "----> 4     picked = hidden[11]" in text
    assert "IndexError: index 11 is out of bounds for dimension 0 with size 2" in text
    check_golden("ipython_function", text.replace("success: False\n", ""))


def test_ipython_traceback_of_an_invoke_in_a_cell(ipython_sections):
    text = ipython_sections["cell_error"]
    assert "----> 1 with model.trace() as tracer:" in text
    assert "----> 2     with tracer.invoke(x):" in text
    assert "----> 4     wide = last.reshape(3, 3)" in text
    assert "RuntimeError: shape '[3, 3]' is invalid for input of size 4" in text
    check_golden("ipython_invoke", text.replace("success: False\n", ""))


# ------------------------------------------------------------------ the classic REPL

REPL_LINES = [
    "import torch",
    "from nnsight import NNsight",
    "model = NNsight(torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU()))",
    "x = torch.randn(2, 4)",
    "with model.trace(x):",
    "    hidden = model[0].output.save()",
    "    print('inside', tuple(hidden.shape))",
    "",
    "print('saved', tuple(hidden.shape))",
    "def run(model, x):",
    "    with model.trace(x):",
    "        out = model[1].output",
    "        picked = out[13]",
    "    return picked",
    "",
    "run(model, x)",
    "with model.trace(",
    "        x) as tracer:",
    "    out = model[0].output",
    "    wide = out.reshape(5, 5)",
    "",
    "1 / 0",
    "print('END')",
]


@pytest.fixture(scope="module")
def repl_text(tmp_path_factory):
    """The whole REPL session (prompts, echoed input, output), normalised."""
    pexpect = pytest.importorskip("pexpect")
    import io

    tmp = tmp_path_factory.mktemp("repl")
    env = child_env(tmp, PYTHON_BASIC_REPL="1")
    log = io.StringIO()
    child = pexpect.spawn(sys.executable, ["-q"], env=env, cwd=str(tmp), encoding="utf-8", timeout=180,
                          dimensions=(50, 250))
    child.logfile_read = log
    try:
        for line in REPL_LINES:
            child.expect_exact([">>> ", "... "])
            child.sendline(line)
        child.expect_exact("END\r\n")
        child.expect_exact(">>> ")
        child.sendline("exit()")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    return normalise(log.getvalue(), tmp)


def _block(text: str, start: str) -> str:
    """From the line ``start`` to the next primary prompt."""
    i = text.index(start)
    j = text.index("\n>>> ", i + len(start))
    return text[i:j + 1]


def test_repl_trace_runs_and_saves(repl_text):
    assert "inside (2, 4)" in repl_text
    assert "saved (2, 4)" in repl_text
    assert "SourceNotFoundError" not in repl_text


def test_repl_traceback_of_a_function_defined_at_the_prompt(repl_text):
    text = _block(repl_text, ">>> run(model, x)")
    assert frames(text) == [
        ("<stdin>", 1, "<module>", "run(model, x)"),
        ("<stdin>", 2, "run", "with model.trace(x):"),
        ("<stdin>", 4, "run", "picked = out[13]"),
    ]
    assert exception_line(text).startswith("IndexError: index 13 is out of bounds")
    assert_clean(text)
    check_golden("repl_function", text)


def test_repl_traceback_of_a_multi_line_with_header(repl_text):
    text = _block(repl_text, ">>> with model.trace(\n")
    assert frames(text) == [
        ("<stdin>", 1, "<module>", "with model.trace("),
        ("<stdin>", 4, "<module>", "wide = out.reshape(5, 5)"),
    ]
    assert exception_line(text).startswith("RuntimeError: shape '[5, 5]' is invalid")
    assert_clean(text)
    check_golden("repl_statement", text)


def test_repl_later_errors_show_no_stale_line(repl_text):
    text = _block(repl_text, ">>> 1 / 0")
    assert frames(text) == [("<stdin>", 1, "<module>", "")]
    assert "ZeroDivisionError" in text


def test_repl_recorder_rebuilds_statements_from_history():
    """nnsight.repl.statement_for on a made-up readline history (no terminal needed)."""
    from nnsight import repl

    ns = {"sys": sys}
    exec(compile("def f(a):\n    return sys._getframe()\n", "<stdin>", "single"), ns)
    exec(compile("fr = f(1)\n", "<stdin>", "single"), ns)
    exec(compile("if True:\n    top = sys._getframe()\nelse:\n    pass\n", "<stdin>", "single"), ns)
    history = ["import sys", "def f(a):", "    return sys._getframe()", "fr = f(1)",
               "if True:", "    top = sys._getframe()", "else:", "    pass"]
    assert repl.statement_for(ns["fr"], history) == "def f(a):\n    return sys._getframe()\n"
    assert repl.statement_for(ns["top"], history) == "if True:\n    top = sys._getframe()\nelse:\n    pass\n"
    assert repl.statement_for(ns["top"], history[:-1]) is None  # the statement is not all there


# ------------------------------------------------------------------ bodies that need care (runtime/skip.py)

def _small_model():
    import torch

    from nnsight import NNsight

    return NNsight(torch.nn.Sequential(torch.nn.Linear(4, 4))), torch.randn(2, 4)


def test_body_starting_with_try_runs_once(capsys):
    model, x = _small_model()
    with model.trace(x):
        try:
            hidden = model[0].output.save()
        finally:
            print("finally ran")
    assert capsys.readouterr().out == "finally ran\n"
    assert hidden.shape == (2, 4)


def test_multi_line_header_binds_its_as_target():
    from nnsight.tracing import InterleavingTracer

    model, x = _small_model()
    with model.trace(
        x
    ) as tracer:
        hidden = model[0].output.save()
    assert isinstance(tracer, InterleavingTracer) and hidden.shape == (2, 4)
