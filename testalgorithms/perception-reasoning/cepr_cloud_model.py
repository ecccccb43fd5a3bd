"""Ianvs cloud model: any OpenAI-compatible server (vLLM, llama.cpp, the OpenAI API, cepr's reference expert) or
the reference expert in-process, with payload and link settings.

Thin adapter: the logic is ``cepr.cloud.module.CloudModule``.
"""

from cepr.compat import get_class_factory

ClassFactory, ClassType = get_class_factory()

from cepr.cloud.module import CloudModule


@ClassFactory.register(ClassType.GENERAL, alias="CeprCloudModel")
class CeprCloudModel(CloudModule):
    """Hyperparameters: backend, base_url (auto = start the reference expert), model, api_key_env, timeout_s,
    payload, resolution, scale, codec, quality, link, ... (docs/runner.md)."""
