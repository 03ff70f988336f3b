import torch


with model.trace(x):
    first = model[0].output.save()
    model[1].output[:, 2] = 0
    model[2].output[:] = model[2].output * -0.5
    model[4].output = model[4].output + 1
    mid = (model[4].output * 2 - 1).save()
    out = model.output.save()
