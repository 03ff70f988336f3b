"""The module paths of nnsight 0.8 (``nnsight.intervention.*``), kept so code written for it imports unchanged."""
