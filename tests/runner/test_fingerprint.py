"""What a case's model fingerprint counts: every file its results depend on, the grounded VLM's included."""

from cepr.runner.fingerprint import model_files


def test_a_grounded_reasoner_counts_its_vlm_files_for_each_edge_model_it_may_run():
    for cal in ("auto", "none"):
        files = model_files("edgemodel", "CeprEdgeModel", {"reasoner": "grounded", "calibration": cal})
        for vlm in ("grounded-edge", "grounded-edge-rgb"):  # model: auto runs either
            for f in ("decoder-q8_0.gguf", "projector.npz", "grounded.json", "tokenizer.json"):
                assert files[f"vlm:{vlm}/{f}"].is_file(), (cal, vlm, f)
        assert ("calibration:edge-int8" in files) == (cal == "auto")
    q4 = model_files("edgemodel", "CeprEdgeModel", {"reasoner": "grounded", "vlm_quant": "q4_0",
                                                    "model": "edge-rgb-int8"})
    assert "vlm:grounded-edge-rgb/decoder-q4_0.gguf" in q4 and not any("grounded-edge/" in k for k in q4)
    assert not any(k.startswith("vlm:") for k in model_files("edgemodel", "CeprEdgeModel", {}))
    cloud = model_files("cloudmodel", "CeprCloudModel", {"backend": "grounded", "vlm_model": "grounded-edge"})
    assert set(cloud) == {f"vlm:grounded-edge/{f}" for f in ("decoder-q8_0.gguf", "projector.npz", "grounded.json",
                                                            "tokenizer.json")}
