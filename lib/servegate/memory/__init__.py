"""Memory: the planner (predicts before launch) and the sampler (measures from start to teardown)."""
