import torch


with model.trace(x):
    h = model[1].output
    match h.shape:
        case (3, n):
            v = (h * n).save()
        case _:
            v = h.save()
    try:
        raise ExceptionGroup('g', [KeyError(1)])
    except* KeyError:
        w = (h + 1).save()
