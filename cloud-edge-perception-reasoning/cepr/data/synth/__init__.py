"""Procedural synthetic scenes in the Cloud-Robotics layout (see ``generate.generate_dataset``)."""

from cepr.data.synth.generate import GenerationReport, generate_dataset

__all__ = ["GenerationReport", "generate_dataset"]
