"""Model builds: the ONNX face stack and the tiny diffusion models (from pinned packages)."""
