"""The Open Inference Protocol (KServe v2): models, tensors and routes."""
