# Day-one mistakes raise errors of the builtin types 0.8.1 code catches.
from nnsight import LanguageModel
from _common import GPT2, emit

BUILTINS = (NameError, AttributeError, IndexError, KeyError, ValueError, TypeError, RuntimeError)
model = LanguageModel(GPT2, dispatch=True)


def kinds(fn):
    try:
        fn()
    except Exception as e:
        return sorted(b.__name__ for b in BUILTINS if isinstance(e, b))
    return "no error"


def unsaved():
    with model.trace("Hello world"):
        h = model.transformer.h[0].output
    return h.shape


def misspelled():
    with model.trace("Hello world"):
        model.transformer.h[0].outptu.save()


def out_of_order():
    with model.trace("Hello world"):
        model.transformer.h[1].output.save()
        model.transformer.h[0].output.save()


def no_source_op():
    with model.trace("Hello world"):
        model.transformer.h[0].attn.source.no_such_call_0.output.save()


def outside_save():
    model.lm_head.output.save()


# Not compared (documented differences): an envoy index out of range (IndexError here, as the
# ModuleList raises; 0.8.1: AttributeError), a trace with neither input nor body (0.8.1:
# ValueError), a path missing from a cache (here an error that is both a KeyError and an
# AttributeError; 0.8.1 returns an empty view).
emit(unsaved=kinds(unsaved), misspelled=kinds(misspelled), out_of_order=kinds(out_of_order),
     no_source_op=kinds(no_source_op), outside_save=kinds(outside_save))
