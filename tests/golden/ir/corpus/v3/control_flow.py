import torch


with model.trace(x):
    h = model[0].output
    if h.sum() > 0:
        v = (h * 2).save()
    else:
        v = (h - 2).save()
    acc = torch.zeros(3)
    for j in range(4):
        if j == 2:
            continue
        acc = acc + h[:, j]
    n = 0
    while n < 3:
        n += 1
    try:
        q = [1.0][n]
    except IndexError:
        q = float(n)
    if (s := acc.sum()) > -100:
        total = (acc * q + s).save()
