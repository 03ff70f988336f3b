import torch


with model.trace() as tracer:
    with tracer.invoke(x):
        a = model[2].output.save()
    with tracer.invoke(x * 2):
        model[2].output[:] = 0
        b = model.output.save()
