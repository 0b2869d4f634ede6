"""The simulated cluster: several nodes on this one machine, each a container with its own fabric IP."""
