"""Feature vectors -> scores: model registry, input layout, ONNX scorer and training."""
