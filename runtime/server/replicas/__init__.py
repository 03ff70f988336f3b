"""Hosted models on a Ray cluster (``nnsight-server serve --ray``).

:mod:`.replica` is the actor that holds one copy of a model and runs jobs through
the accept path; :mod:`.pool` is the front's dispatcher feeding the replicas from
the job store. Importing this package does not import Ray; starting a pool does.
"""
