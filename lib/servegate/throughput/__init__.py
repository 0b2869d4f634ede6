"""Throughput: load workloads from a recipe's `expect.throughput`, run by a well-kept load generator
(AIPerf, or vLLM's own `vllm bench serve`), normalised to one schema, checked against thresholds and
baselines. See docs/load-generation.md."""
