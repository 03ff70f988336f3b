"""``breakpoint()`` inside a trace: the intervention runs in a greenlet; pdb must still work.

Driven through a pseudo-terminal: stop at the line, print a variable, step,
continue to the end.
"""
import shutil
import sys

import pytest

from dbg_helpers import SCRIPTS, child_env, line_of, normalise

pexpect = pytest.importorskip("pexpect")


def test_breakpoint_in_an_invoke(tmp_path):
    script = tmp_path / "breakpoint_script.py"
    shutil.copy(SCRIPTS / "breakpoint_script.py", script)
    stop = line_of(script, "out = model[2].output.save()")
    child = pexpect.spawn(sys.executable, [str(script)], env=child_env(tmp_path), cwd=str(tmp_path),
                          encoding="utf-8", timeout=180, dimensions=(50, 250))
    try:
        child.expect_exact("(Pdb) ")
        where = normalise(child.before, tmp_path)
        # pdb stops on the user's own file and line, in the user's function
        assert "> <TMP>/breakpoint_script.py(%d)run()" % stop in where, where
        assert "-> out = model[2].output.save()" in where
        child.sendline("p tuple(hidden.shape), type(hidden).__name__")
        child.expect_exact("(Pdb) ")
        assert "((2, 4), 'Tensor')" in child.before
        child.sendline("l %d, %d" % (stop - 1, stop))
        child.expect_exact("(Pdb) ")
        assert "breakpoint()" in child.before and "->" in child.before
        child.sendline("n")  # the next line waits for layer 2: the model runs on, then comes back
        child.expect_exact("(Pdb) ")
        child.sendline("c")
        child.expect(pexpect.EOF)
        assert "done (2, 2)" in child.before
    finally:
        child.close(force=True)
    assert child.exitstatus == 0
