"""Server settings: one frozen dataclass, validated once, shared by the app and the CLI."""

from __future__ import annotations

from dataclasses import dataclass

from distilmarco.errors import InputError


@dataclass(frozen=True)
class ServerSettings:
    """Every knob of the HTTP server. ``validate`` is called by ``create_app``."""

    host: str = "127.0.0.1"
    port: int = 8080
    api_key: str | None = None
    cors_origins: tuple[str, ...] = ()
    # batching: one worker; a batch holds up to max_batch_tokens real tokens
    max_batch_tokens: int = 16384
    max_wait_ms: float = 2.0
    max_queue_tokens: int = 131072
    # shed (429) when a new request's first step would end later than this, at measured speed
    max_queue_wait_s: float = 5.0
    # how long an index write waits for another writer's lock before answering 503
    index_lock_wait_s: float = 5.0
    # Host header values accepted; empty: loopback names only when bound to loopback, else any
    allowed_hosts: tuple[str, ...] = ()
    # limits per request
    max_body_bytes: int = 8 * 1024 * 1024
    max_inputs: int = 2048
    max_input_chars: int = 32768
    max_k: int = 1000
    truncate: bool = True  # default policy for inputs longer than the model's limit
    warmup: bool = True
    model_name: str | None = None  # name reported to OpenAI clients (default: the model id)

    def validate(self) -> ServerSettings:
        positive = {
            "port": self.port,
            "max_batch_tokens": self.max_batch_tokens,
            "max_queue_tokens": self.max_queue_tokens,
            "max_body_bytes": self.max_body_bytes,
            "max_inputs": self.max_inputs,
            "max_input_chars": self.max_input_chars,
            "max_k": self.max_k,
        }
        for name, value in positive.items():
            if not isinstance(value, int) or value < 1:
                raise InputError(f"{name} must be a positive integer, got {value!r}")
        if self.port > 65535:
            raise InputError(f"port must be between 1 and 65535, got {self.port}")
        if self.max_queue_tokens < self.max_batch_tokens:
            raise InputError(
                f"max_queue_tokens {self.max_queue_tokens} must be >= max_batch_tokens "
                f"{self.max_batch_tokens}"
            )
        if not 0 <= self.max_wait_ms <= 1000:
            raise InputError(f"max_wait_ms must be between 0 and 1000, got {self.max_wait_ms}")
        if not 0 < self.max_queue_wait_s <= 3600:
            raise InputError(
                f"max_queue_wait_s must be between 0 and 3600, got {self.max_queue_wait_s}"
            )
        if not 0 <= self.index_lock_wait_s <= 600:
            raise InputError(
                f"index_lock_wait_s must be between 0 and 600, got {self.index_lock_wait_s}"
            )
        if self.api_key is not None and len(self.api_key) < 8:
            raise InputError("api_key must be at least 8 characters long")
        return self
