"""The names and import paths nnsight 0.8 code and nnsight's docs use, and the status queries."""
import importlib
import subprocess
import sys
import warnings

import pytest

import nnsight

DOC_PATHS = {
    "nnsight.modeling.language": "LanguageModel",
    "nnsight.modeling.transformers": "TransformersModel",
    "nnsight.modeling.base": "NNsight",
    "nnsight.modeling.diffusion": "DiffusionModel",
    "nnsight.intervention.envoy": "Envoy",
}


@pytest.mark.parametrize("module, name", sorted(DOC_PATHS.items()))
def test_documented_import_paths(module, name):
    value = getattr(importlib.import_module(module), name)
    assert value is getattr(nnsight, name)


def test_vllm_import_path():
    pytest.importorskip("vllm")
    from nnsight.modeling.vllm import VLLM

    assert VLLM.__module__.startswith("nnsight.modeling.vllm")


def test_intervention_is_a_package():
    import nnsight.intervention

    assert hasattr(nnsight.intervention, "__path__")


def test_all_names_resolve_and_star_import():
    assert {"NNsight", "LanguageModel", "TransformersModel", "Envoy", "save", "CONFIG",
            "NNsightDeprecationWarning", "ndif_status", "status"} <= set(nnsight.__all__)
    for name in nnsight.__all__:
        assert getattr(nnsight, name) is not None, name
    namespace = {}
    exec("from nnsight import *", namespace)
    assert namespace["TransformersModel"] is nnsight.TransformersModel


def test_deprecation_warning_is_a_future_warning():
    from nnsight.deprecation import NNsightDeprecationWarning

    assert nnsight.NNsightDeprecationWarning is NNsightDeprecationWarning
    assert issubclass(NNsightDeprecationWarning, FutureWarning)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.warn("old spelling", NNsightDeprecationWarning)
    assert caught[0].category is NNsightDeprecationWarning


@pytest.mark.parametrize("call", [lambda h: nnsight.ndif_status(host=h), lambda h: nnsight.status(host=h),
                                  lambda h: nnsight.is_model_running("openai-community/gpt2", host=h)])
def test_status_queries_name_the_server_they_cannot_reach(call):
    """Both spellings ask the configured server; with none listening, the error says which host."""
    from nnsight.remote.errors import RemoteError

    with pytest.raises(RemoteError, match="cannot reach the nnsight server at http://127.0.0.1:9"):
        call("http://127.0.0.1:9")


def test_import_nnsight_does_not_import_diffusers_or_peft():
    code = "import sys, nnsight; print(sorted(m for m in ('diffusers', 'peft', 'accelerate') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
