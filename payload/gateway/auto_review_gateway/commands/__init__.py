"""The commands: ``check``, ``probe``, ``review`` and ``serve``, one module each.

Each wires the stages below it for one use: ``serve`` builds the HTTP side, the queue and
its workers; ``review`` runs the review pipeline once and may publish it. The top of the
gateway: anything below may be imported here, nothing here is imported below.
"""
