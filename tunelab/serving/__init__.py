"""Deployments: tuned models served from processes of their own (serving/process.py), started and
supervised by serving/supervisor.py, reached over a Unix socket (serving/client.py); generative
models with many LoRA adapters on one base (lm_backend.py), classifiers micro-batched and
optionally on onnxruntime (classify_backend.py, onnx_export.py). A GPU engine would plug in as
another backend behind the same server routes."""
