"""The process that serves one App: ``python -m yurt.runner --payload PATH --port N``.

Nothing here imports the control plane (router, scheduler, backends, discovery, nomad, consul):
a runner is a leaf, and a test asserts it.
"""
