"""Put this folder first on PYTHONPATH (with lib/) for a GPU run's vLLM processes:
SERVEGATE_TRACE_PROFILE=FILE records the allocator trace of profile_run and writes what was alive at its
peak to FILE (memory/trace_peak.py); SERVEGATE_HOST_PROBE=FILE appends every MemorySnapshot vLLM measures,
with the host's figures, to FILE (memory/uma_probe.py). Without the variables it does nothing."""

import os

if os.environ.get("SERVEGATE_TRACE_PROFILE"):
    from servegate.memory.trace_peak import install

    install(os.environ["SERVEGATE_TRACE_PROFILE"])
if os.environ.get("SERVEGATE_HOST_PROBE"):
    from servegate.memory.uma_probe import install as install_probe

    install_probe(os.environ["SERVEGATE_HOST_PROBE"])
