"""Root conftest: servegate's fixtures and options are plugins living in fixtures/, one module per step."""

pytest_plugins = ["fixtures.options", "fixtures.stack", "fixtures.preflight", "fixtures.image", "fixtures.mods",
                  "fixtures.weights", "fixtures.ray", "fixtures.flags", "fixtures.memory", "fixtures.throughput",
                  "fixtures.serve", "fixtures.parsing", "fixtures.report",
                  "fixtures.stack_parity", "fixtures.fabric", "fixtures.serving_checks"]
