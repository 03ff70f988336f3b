"""The messages an intervention (mediator) sends to the interleaver.

Each is a small tuple ``(kind, key, iteration, payload)``; ``key`` names a
provider such as ``"model.transformer.h.0.output"``.
"""

VALUE = 0  # give me the value of key at iteration
SWAP = 1  # replace the value of key at iteration with payload
SKIP = 2  # do not run the module; use payload as its output (key is its input)
BARRIER = 3  # wait at barrier payload until all its participants arrive
END = 4  # the intervention finished
EXCEPTION = 5  # the intervention raised payload
STEP = 6  # wait until the model starts step `iteration` (key: the root input); answered True,
#           or False when the model finished without it (tracer.iter / tracer.all())

NAMES = {VALUE: "VALUE", SWAP: "SWAP", SKIP: "SKIP", BARRIER: "BARRIER", END: "END", EXCEPTION: "EXCEPTION", STEP: "STEP"}
