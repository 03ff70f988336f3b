"""The runtime: executes intervention IR inside a model's forward pass.

Pieces: :mod:`runtime.builder` turns IR units into code; :mod:`runtime.mediator`
runs each intervention on its own worker; :mod:`runtime.interleaver` patches the
model's modules and matches requests with providers; :mod:`runtime.batcher`
narrows batched values per invoke.
"""
