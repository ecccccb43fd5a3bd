"""Training the language models on the suite's own scenes: the text corpus and tokenizer set
(:mod:`~cepr.training.corpus`, :func:`~cepr.training.tiny_set.build_tiny`), LoRA fine-tuning of a GGUF model's
Hugging Face twin (:mod:`~cepr.training.finetune`) and our own vision-language model
(:mod:`~cepr.training.vlm_train`). It sits above the edge and the cloud because its data are their summaries and
prompts; the engines that run what it trains live in :mod:`cepr.llm`. Needs the llm extra (torch, transformers)."""
