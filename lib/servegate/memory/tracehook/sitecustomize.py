"""Put this folder first on PYTHONPATH with SERVEGATE_TRACE_PROFILE=FILE set: the vLLM engine process then
records the allocator trace of profile_run and writes what was alive at its peak to FILE
(memory/trace_peak.py). Without the variable it does nothing."""

import os

if os.environ.get("SERVEGATE_TRACE_PROFILE"):
    from servegate.memory.trace_peak import install

    install(os.environ["SERVEGATE_TRACE_PROFILE"])
