"""compiler.frontend.capture: recovering the source of the frame entering a with-block."""
import linecache
import os
import subprocess
import sys
import textwrap

import pytest

from compiler.frontend import capture
from compiler.frontend.capture import command_from_argv, register_repl_source, source_for_frame
from compiler.frontend.errors import SourceNotFoundError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# A context manager whose __enter__ lowers its caller's with-block, as the
# runtime's Tracer does, and prints what it found.
GRAB = textwrap.dedent(
    """
    import sys
    from compiler.frontend import program_for_frame

    class Grab:
        def __enter__(self):
            p = program_for_frame(sys._getframe(1))
            print("UNITS", len(p.units), p.units[0].loc.line, repr(p.units[0].source))
            print("BINDINGS", [b.name for b in p.bindings])
            return self

        def __exit__(self, *exc):
            return False
    """
)


def _run(args, cwd):
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.run([sys.executable] + args, cwd=cwd, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_script_file(tmp_path):
    script = GRAB + textwrap.dedent(
        """
        def main(k):
            with Grab(
            ) as g:
                y = k + 1  # body
        main(1)
        """
    )
    path = tmp_path / "script.py"
    path.write_text(script)
    out = _run([str(path)], tmp_path)
    line = script.splitlines().index("        y = k + 1  # body") + 1
    assert "UNITS 1 %d 'y = k + 1  # body\\n'" % line in out
    assert "BINDINGS ['k']" in out


def test_python_dash_c(tmp_path):
    code = GRAB + '\nwith Grab():\n    z = len("abc")\n'
    out = _run(["-X", "utf8", "-c", code], tmp_path)
    assert "UNITS 1" in out and """'z = len("abc")\\n'""" in out
    assert "BINDINGS ['len']" in out


def test_command_from_argv():
    assert command_from_argv(["python", "-c", "x"]) == "x"
    assert command_from_argv(["python", "-X", "dev", "-W", "error", "-c", "x"]) == "x"
    assert command_from_argv(["python", "-Bc", "x"]) == "x"
    assert command_from_argv(["python", "-cx = 1"]) == "x = 1"
    assert command_from_argv(["python", "-Wignore", "-c", "x"]) == "x"
    assert command_from_argv(["python", "script.py", "-c", "x"]) is None
    assert command_from_argv(["python", "-m", "mod", "-c", "x"]) is None
    assert command_from_argv(["python"]) is None


def _frame_of(src, filename, register):
    code = compile(src, filename, "exec")
    if register:
        linecache.cache[filename] = (len(src), None, src.splitlines(True), filename)
    ns = {"sys": sys}
    try:
        exec(code, ns)
    finally:
        linecache.cache.pop(filename, None)
    return ns["frame"], ns


def test_exec_with_linecache():
    src = "x = 1\nframe = sys._getframe()\n"
    frame, _ = _frame_of(src, "<my-generated-code>", register=True)
    linecache.cache["<my-generated-code>"] = (len(src), None, src.splitlines(True), "<my-generated-code>")
    try:
        got = source_for_frame(frame)
    finally:
        linecache.cache.pop("<my-generated-code>", None)
    assert got.text == src and got.filename == "<my-generated-code>" and got.first_line == 1


def test_linecache_entry_used_as_is(tmp_path):
    # a stale entry (file changed on disk) is what was executed: no checkcache
    path = tmp_path / "mod.py"
    path.write_text("changed = True\n")
    executed = ["frame = sys._getframe()\n"]
    linecache.cache[str(path)] = (1, 1.0, executed, str(path))
    try:
        frame, _ = _frame_of("".join(executed), str(path), register=False)
        linecache.cache[str(path)] = (1, 1.0, executed, str(path))
        assert source_for_frame(frame).text == "frame = sys._getframe()\n"
    finally:
        linecache.cache.pop(str(path), None)


def test_exec_without_source_fails_clearly():
    frame, _ = _frame_of("frame = sys._getframe()\n", "<nowhere>", register=False)
    with pytest.raises(SourceNotFoundError) as e:
        source_for_frame(frame)
    msg = str(e.value)
    assert "<nowhere>" in msg and "linecache" in msg and ".py file" in msg


def test_repl_history(monkeypatch):
    monkeypatch.setattr(capture, "REPL_HISTORY", [])
    src = "a = 1\nb = 2\nframe = sys._getframe()\n"
    frame, _ = _frame_of(src, "<stdin>", register=False)
    with pytest.raises(SourceNotFoundError) as e:
        source_for_frame(frame)
    assert "register_repl_source" in str(e.value)
    register_repl_source(src)
    register_repl_source("short = 1")  # too short to hold line 3: skipped
    got = source_for_frame(frame)
    assert got.text == src and got.origin == "repl-history"


IPython = pytest.importorskip("IPython")


@pytest.fixture(scope="module")
def shell():
    from IPython.core.interactiveshell import InteractiveShell

    return InteractiveShell.instance()


def test_ipython_cell(shell):
    got = {}

    def grab():
        from compiler.frontend import lower

        frame = sys._getframe(1)
        src = source_for_frame(frame)
        got["src"] = src
        got["program"] = lower(src.text, src.filename, frame.f_lineno - 1, first_line=src.first_line)

    shell.user_ns["grab"] = grab
    shell.user_ns["ctx"] = __import__("contextlib").nullcontext
    result = shell.run_cell("%time x = 1\nwith ctx():\n    grab()\n    y = x + 1\n")
    result.raise_error()
    src = got["src"]
    assert src.origin == "linecache" and "run_line_magic" in src.text
    assert got["program"].units[0].source == "grab()\ny = x + 1\n"


def test_ipython_history_fallback(shell):
    got = {}

    def grab():
        frame = sys._getframe(1)
        linecache.cache.pop(frame.f_code.co_filename, None)
        got["src"] = source_for_frame(frame)

    shell.user_ns["grab"] = grab
    result = shell.run_cell("a = 1\ngrab()\n", store_history=True)
    result.raise_error()
    assert got["src"].origin == "ipython-history"
    assert got["src"].text == "a = 1\ngrab()\n"


def test_cell_filenames():
    from compiler.frontend.capture import looks_like_cell

    assert looks_like_cell("<ipython-input-3-0123abcd>")
    assert looks_like_cell("/tmp/ipykernel_4242/1234567.py")
    assert not looks_like_cell("<string>") and not looks_like_cell("/home/u/script.py")
