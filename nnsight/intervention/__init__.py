"""Import paths of nnsight 0.8's ``nnsight.intervention`` package, kept for code written for it.

``from nnsight.intervention.envoy import Envoy`` gives the same class as ``from nnsight import Envoy``.
"""
