"""What a given vLLM accepts on `vllm serve`, and whether a recipe's rendered command fits it.

extract.py (standalone, runs where vLLM lives) -> manifest.py (store, find, cache by version)
-> check.py (findings for one command) / diff.py (changes between versions) -> cli.py.
node.py extracts on a deploy's node after its mods (cached per env + mods) and gate.py checks a
rendered recipe's launches there (scenarios/test_50_flags.py); matrix.py is the recipe x version table
(matrix_render.py prints it).
The submodules are the API; this package re-exports the few names most callers need.
"""

from servegate.flags.check import Finding, check_command
from servegate.flags.manifest import ManifestError, dump, dump_via, find_manifest, load, save

__all__ = [
    "Finding",
    "ManifestError",
    "check_command",
    "dump",
    "dump_via",
    "find_manifest",
    "load",
    "save",
]
