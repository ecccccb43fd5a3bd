"""What a cloud backend is asked (``CloudRequest``) and what it returns (``CloudResult``), whatever the backend."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

STATUSES = ("ok", "fallback", "error")


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    # "server": counted by the server; "server-estimate": reported by a server that says they are estimates
    # (cepr's reference expert); "estimate": counted here (words and punctuation) when nothing was reported
    counted: str = "server"

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass
class Timings:
    sent_at: float = 0.0  # wall-clock time the request left (time.time())
    ttft_ms: float | None = None  # time to first token, streaming only
    total_ms: float = 0.0  # request sent -> response complete
    # gaps between streamed chunks that carry text: one token each on a plain server, several under speculative
    # decoding (vLLM sends every token a step accepted in one chunk), so these are NOT inter-token latencies
    inter_chunk_ms: list[float] = field(default_factory=list)
    decode_ms: float | None = None  # first text chunk -> last text chunk (streaming only)
    inter_token_ms: float | None = None  # decode_ms / (completion tokens - 1): mean time per token after the first
    tokens_per_s: float | None = None  # completion tokens / total_ms (the whole request, first token included)
    transfer_ms: float = 0.0  # modelled edge<->cloud link time for the counted bytes (0 without a link model)

    def per_token(self, completion_tokens: int) -> Timings:
        """Fill ``inter_token_ms`` and ``tokens_per_s`` from the token count (the server's, where it reports
        one); left None where undefined (no stream, fewer than two tokens)."""
        n = int(completion_tokens or 0)
        if self.decode_ms is not None and n >= 2:
            self.inter_token_ms = self.decode_ms / (n - 1)
        if n > 0 and self.total_ms > 0:
            self.tokens_per_s = n / (self.total_ms / 1e3)
        return self


@dataclass
class CloudResult:
    """``status``: ok (a parsed answer), fallback (no cloud answer: the edge answer stands, e.g. timeout,
    open circuit), error (the cloud answered but unusably, e.g. unparsable); ``reason`` says why."""

    status: str
    answer: str | None = None
    reason: str = ""
    confidence: float | None = None
    raw_text: str = ""
    usage: Usage = field(default_factory=Usage)
    timings: Timings = field(default_factory=Timings)
    bytes_up: int = 0
    bytes_down: int = 0
    model: str = ""
    attempts: int = 1

    def __post_init__(self):
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {self.status!r}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class CloudRequest:
    task: str
    prompt: str
    answers: tuple[str, ...]
    summary: dict | None = None  # SceneSummary.to_dict()
    image: np.ndarray | None = None  # RGB frame, encoded by the payload settings
    camera: dict | None = None  # the robot's camera (Camera.to_dict()): lets the cloud measure distances
    key: str = ""  # sample id: names the request in logs and seeds the link model
    # this request's payload settings (cepr.cloud.payload.PayloadConfig), chosen per sample by the cloud module's
    # payload policy (cepr.dispatch.payload_policy); None: the backend's own ``payload`` setting
    payload: object | None = None
    # the ``features`` payload: the grounded VLM's projected vision tokens, encoded by the payload's codec
    # (cepr.llm.grounded.encode_vision), and the VLM whose projector made them
    features: bytes | None = None
    features_model: str | None = None

    def user_prompt(self) -> str:
        return f"{self.prompt}\nAllowed answers: {', '.join(self.answers)}."
