"""Root conftest: servegate's fixtures and options are plugins living in fixtures/."""

pytest_plugins = ["fixtures.options", "fixtures.deploy", "fixtures.report", "fixtures.memory",
                  "fixtures.throughput", "fixtures.multinode", "fixtures.chat"]
