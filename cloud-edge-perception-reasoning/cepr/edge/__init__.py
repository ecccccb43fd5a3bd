"""Edge perception: RFNet-style segmentation (torch for training only), ONNX Runtime inference, scene
summary and local planner. ``import cepr.edge`` never imports torch."""
