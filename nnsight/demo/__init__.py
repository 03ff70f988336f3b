"""The demo: interventions on SmolLM2-135M (``python -m nnsight.demo``)."""
