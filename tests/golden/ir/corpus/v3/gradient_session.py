import torch


with model.trace(x):
    h = model[0].output
    h.requires_grad = True
    out = model.output
    with out.pow(2).sum().backward():
        g = h.grad.save()
    total = out.sum().detach().save()
