"""The loader's refusal table is resolved once per set of imports and again after any import.

A guard is made per request; resolving the policy's refused entries against the imported modules
is shared (runtime/loader/refusal_table.py). Sharing must never leave out an entry point of a
module imported after the table was made: the next request's table holds it.
"""
import subprocess
import sys
import textwrap

PROBE = textwrap.dedent("""
    import sys
    from runtime.loader import refusal_table
    from runtime.loader.builtins_table import make_builtins
    from runtime.loader.guard import Guard
    assert "uuid" not in sys.modules, "the probe needs a module this process has not imported"
    first = refusal_table.current()
    assert refusal_table.current() is first, "not reused while nothing was imported"
    import uuid
    second = refusal_table.current()
    assert second is not first, "not resolved again after an import"
    assert id(uuid.getnode) in second.refused_ids and id(uuid.getnode) not in first.refused_ids
    guards = []
    make_builtins(lambda *a, **k: None, lambda table: guards.append(Guard(table)) or guards[-1])
    guard = guards[0]
    try:
        guard.value(uuid.getnode)
    except Exception as error:
        assert "uuid.getnode" in str(error), error
    else:
        raise AssertionError("uuid.getnode was not refused by identity")
    guard.refused_ids[id(len)] = (len, "len", None)  # a guard's own additions stay its own
    assert id(len) not in refusal_table.current().refused_ids
    print("ok")
""")


def test_a_module_imported_after_the_table_was_made_is_covered(tmp_path):
    root = __file__.rsplit("/tests/", 1)[0]
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, cwd=root, timeout=120,
                         env={"PYTHONPATH": root, "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stdout + out.stderr
