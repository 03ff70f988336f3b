"""The untrusted tier: each job's code in a disposable, kernel-confined sandbox process.

The model's forward pass stays in the model's process; the job's code (the whole
accept path: loader, tracer, interventions) runs in a child forked from a warm
template, against a weightless stand-in of the hosted model whose module calls
go back to the model process. See docs/security.md, "Process isolation".

Modules: :mod:`.runner` (the job runner the worker uses), :mod:`.selection`
(which jobs are sandboxed), :mod:`.warm` and :mod:`.template` (the template
process), :mod:`.child` (a child's job), :mod:`.confine` with :mod:`.landlock`
and :mod:`.seccomp` (the kernel layers), :mod:`.standin` (the model as the child
sees it), :mod:`.host` (the model process's end), :mod:`.channel` (frames),
:mod:`.values` (values across the boundary), :mod:`.results` (a result holding
objects of the model process), :mod:`.arena` (shared memory), :mod:`.warmup` (the
template's warm-up job).
"""
