"""The only skips a full test run may have. Any other skip fails the run (see ``conftest.py``), so a missing
system package, a model that did not build or an engine that did not start shows as a failure, not as a quiet
'skipped'.

Each entry: (a regular expression that the skip's reason must match, why it may skip). A GPU test skips with a
reason that starts "not run:" and names the missing GPU; the rest are the inverse checks that only make sense on
one kind of onnxruntime build. Keep this list short and say why for every line.
"""

ALLOWED_SKIPS: list[tuple[str, str]] = [
    (r"^not run: .*(GPU|CUDA|TensorRT)", "a GPU test on a machine without a GPU or a CUDA/TensorRT onnxruntime"),
    (r"^this onnxruntime build has CUDA$", "checks what a CPU-only onnxruntime says; moot on a CUDA build"),
]
