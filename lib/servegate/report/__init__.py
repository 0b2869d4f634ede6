"""Reports of one or several runs: HTML (plots embedded) and markdown, built from the run folders alone."""
