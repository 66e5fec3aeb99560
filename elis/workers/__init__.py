"""Worker runtime: engine adapters (vLLM, trace), continuous batching, worker start-up."""
