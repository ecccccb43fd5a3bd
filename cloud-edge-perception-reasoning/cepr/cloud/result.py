"""What a cloud model returns for one sample, whatever the backend."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

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
    inter_token_ms: list[float] = field(default_factory=list)
    transfer_ms: float = 0.0  # modelled edge<->cloud link time for the counted bytes (0 without a link model)


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
