"""Tooling of the local stack (``make up``, ``make demo``, ``make up-fleet``; scripts/up.sh).

Not a service: the stack's processes are the other packages. This holds what the shell scripts
and the tests share about the stack itself, importable from both instead of loaded by path:
``stack.config`` reads ``scripts/services.conf`` and writes the local Prometheus config with its
ports, ``stack.demo`` caps ``for:`` of the demo alerts so that ``make demo`` fires them within
minutes. Each runs as ``python -m stack.config ...`` / ``python -m stack.demo ...``.
"""
