"""remote='local' reuses what depends only on the request's content, and nothing else:
the guarded build of a program, and the list of user modules to hide."""
import sys
import types

import pytest

from nnsight.testing.tiny_models import build_gpt2


@pytest.fixture(scope="module")
def model():
    from nnsight import LanguageModel

    return LanguageModel(build_gpt2())


def test_the_same_program_gets_its_guarded_build_back_and_a_refused_one_is_never_kept(model):
    from runtime.loader import compiled_cache
    from runtime.loader.errors import ServerRefusal

    programs = []
    for _ in range(2):
        with model.trace("Hello world", remote="local") as tracer:
            out = model.lm_head.output.save()
        programs.append(tracer.remote_request.program)
    built = [compiled_cache.guarded_build(p, lambda p: object()) for p in programs]
    assert built[0] is built[1]  # same content, same build
    assert compiled_cache.program_digest(programs[0]) == compiled_cache.program_digest(programs[1])

    def refuse(program):
        raise ServerRefusal("refused", code="NN402")

    compiled_cache.clear()
    with pytest.raises(ServerRefusal):
        compiled_cache.guarded_build(programs[0], refuse)
    sentinel = object()
    assert compiled_cache.guarded_build(programs[0], lambda p: sentinel) is sentinel  # nothing was kept
    assert out.shape[-1] == 768


def test_a_user_module_added_after_a_trace_is_hidden_at_the_next(model, tmp_path):
    from runtime.loader.blocking import block_user_modules

    with block_user_modules():
        pass  # the snapshot of sys.modules is taken
    path = tmp_path / "late_user_module.py"
    path.write_text("x = 1\n")
    module = types.ModuleType("late_user_module")
    module.__file__ = str(path)
    sys.modules["late_user_module"] = module
    try:
        with block_user_modules() as hidden:
            assert "late_user_module" in hidden and "late_user_module" not in sys.modules
        assert sys.modules["late_user_module"] is module
    finally:
        del sys.modules["late_user_module"]
    with block_user_modules() as hidden:
        assert "late_user_module" not in hidden
