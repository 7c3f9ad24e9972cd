"""Every Prometheus metric Sovereign exports, defined once.

Names follow Prometheus conventions (``sovereign_`` prefix, ``_total`` counters, base units:
seconds, bytes) and, where one exists, mirror the OpenTelemetry GenAI semantic conventions
(https://opentelemetry.io/docs/specs/semconv/gen-ai/gen-ai-metrics/):

=====================================================  ============================================
OpenTelemetry GenAI metric                             Sovereign family
=====================================================  ============================================
``gen_ai.server.request.duration``                     ``sovereign_request_duration_seconds``
``gen_ai.server.time_to_first_token``                  ``sovereign_time_to_first_token_seconds``
``gen_ai.server.time_per_output_token``                ``sovereign_inter_token_latency_seconds``
``gen_ai.client.token.usage`` (``gen_ai.token.type``)  ``sovereign_{prompt,completion}_tokens_total``
=====================================================  ============================================

Label values are bounded: route templates (not raw paths), configured model / engine names,
status codes, exception class names, node names, cache layers, GPU indexes. Never user text,
never request, document or tenant ids.

Several uvicorn workers: set ``PROMETHEUS_MULTIPROC_DIR`` (an empty directory, wiped before
start) and ``/metrics`` aggregates all processes with prometheus-client's ``MultiProcessCollector``.
Each gauge declares how workers combine (``livesum`` for per-worker counts, ``livemax`` for values
every worker samples alike, such as GPU memory).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from sovereign import __version__

# Latency buckets in seconds: sub-millisecond cache hits up to multi-minute generations.
# Alert rules select ``le="2.5"``, ``le="5.0"``, ``le="10.0"`` and ``le="30.0"``: keep those bounds.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
TOKEN_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56)

# -- process ----------------------------------------------------------------------------------
BUILD_INFO = Gauge(
    "sovereign_build_info", "Always 1; the version label says which Sovereign is running.", ["version"],
    multiprocess_mode="livemax",
)
BUILD_INFO.labels(version=__version__).set(1)

# -- HTTP gateway -----------------------------------------------------------------------------
REQUESTS = Counter(
    "sovereign_requests_total", "HTTP requests by route template, model and status code.",
    ["route", "model", "status"],
)
REQUEST_DURATION = Histogram(
    "sovereign_request_duration_seconds", "HTTP request duration, from receipt to last byte.",
    ["route", "model", "status"], buckets=LATENCY_BUCKETS,
)
REQUESTS_IN_FLIGHT = Gauge(
    "sovereign_requests_in_flight", "HTTP requests being served now.", multiprocess_mode="livesum"
)

# -- generation (GenAI) -----------------------------------------------------------------------
TIME_TO_FIRST_TOKEN = Histogram(
    "sovereign_time_to_first_token_seconds", "Time from request receipt to the first output token (TTFT).",
    ["model"], buckets=LATENCY_BUCKETS,
)
INTER_TOKEN_LATENCY = Histogram(
    "sovereign_inter_token_latency_seconds", "Time between consecutive output tokens of one stream (ITL).",
    ["model"], buckets=TOKEN_LATENCY_BUCKETS,
)
PROMPT_TOKENS = Counter("sovereign_prompt_tokens_total", "Prompt (input) tokens processed.", ["model"])
COMPLETION_TOKENS = Counter("sovereign_completion_tokens_total", "Completion (output) tokens generated.", ["model"])
OUTPUT_TOKENS_PER_SECOND = Histogram(
    "sovereign_output_tokens_per_second", "Decode speed of one request: output tokens / decode seconds.",
    ["model"], buckets=(1, 2, 5, 10, 20, 40, 80, 160, 320, 640, 1280),
)

# -- engines ----------------------------------------------------------------------------------
ENGINE_QUEUE_DEPTH = Gauge(
    "sovereign_engine_queue_depth", "Requests waiting for an engine.", ["engine"], multiprocess_mode="livesum"
)
ENGINE_QUEUE_CAPACITY = Gauge(
    "sovereign_engine_queue_capacity", "Requests allowed to wait for an engine before 503 (engine.max_queue).",
    ["engine"], multiprocess_mode="livesum",
)
ENGINE_INFLIGHT = Gauge(
    "sovereign_engine_inflight_requests", "Requests an engine is generating now.", ["engine"],
    multiprocess_mode="livesum",
)
ENGINE_ERRORS = Counter(
    "sovereign_engine_errors_total", "Engine call failures by error class name.", ["engine", "kind"]
)
ENGINE_RETRIES = Counter("sovereign_engine_retries_total", "Retried engine calls.", ["engine"])
ENGINE_FALLBACKS = Counter(
    "sovereign_engine_fallbacks_total", "Requests moved to the next deployment.", ["model", "from_engine", "to_engine"]
)
ENGINE_BREAKER_STATE = Gauge(
    "sovereign_engine_breaker_state", "Circuit breaker state: 0 closed, 1 half-open, 2 open.", ["engine"],
    multiprocess_mode="livemax",
)
ENGINE_RESTARTS = Counter(
    "sovereign_engine_restarts_total", "Times a managed engine process exited on its own and was restarted.",
    ["engine"],
)
ENGINE_UP = Gauge(
    "sovereign_engine_up", "1 when the engine is loaded / its last health probe passed, else 0.", ["engine"],
    multiprocess_mode="livemin",
)

# -- host resources (sampled by observability.system) -----------------------------------------
GPU_MEMORY_USED = Gauge(
    "sovereign_gpu_memory_used_bytes", "GPU memory in use on the device (all processes), from NVML.", ["gpu"],
    multiprocess_mode="livemax",
)
GPU_MEMORY_TOTAL = Gauge(
    "sovereign_gpu_memory_total_bytes", "GPU memory on the device, from NVML.", ["gpu"],
    multiprocess_mode="livemax",
)
DATA_VOLUME_FREE = Gauge(
    "sovereign_data_volume_free_bytes", "Free bytes on the filesystem holding data_dir.",
    multiprocess_mode="livemin",
)
DATA_VOLUME_SIZE = Gauge(
    "sovereign_data_volume_size_bytes", "Size in bytes of the filesystem holding data_dir.",
    multiprocess_mode="livemax",
)

# -- response cache ---------------------------------------------------------------------------
CACHE_LOOKUPS = Counter(
    "sovereign_cache_lookups_total", "Cache lookups by layer (exact, semantic) and result (hit, miss).",
    ["layer", "result"],
)
CACHE_LOOKUP_DURATION = Histogram(
    "sovereign_cache_lookup_duration_seconds", "Cache lookup latency.", ["backend"], buckets=LATENCY_BUCKETS
)
CACHE_EVICTIONS = Counter("sovereign_cache_evictions_total", "Cache entries evicted by reason.", ["reason"])
CACHE_ERRORS = Counter("sovereign_cache_errors_total", "Cache backend failures (served as misses).", ["backend"])
CACHE_ENTRIES = Gauge("sovereign_cache_entries", "Entries in the response cache.", ["backend"],
                      multiprocess_mode="livemax")

# -- document memory --------------------------------------------------------------------------
RETRIEVAL_DURATION = Histogram(
    "sovereign_retrieval_duration_seconds", "Hybrid search latency by store.", ["store"], buckets=LATENCY_BUCKETS
)
INGEST_FILES = Counter("sovereign_ingest_files_total", "Files seen by ingestion by outcome.", ["outcome"])
INGEST_CHUNKS = Counter("sovereign_ingest_chunks_total", "Chunks embedded and stored.", ["store"])
EMBEDDING_DURATION = Histogram(
    "sovereign_embedding_duration_seconds", "Time to embed one batch.", ["model"], buckets=LATENCY_BUCKETS
)

# -- agents -----------------------------------------------------------------------------------
AGENT_NODE_DURATION = Histogram(
    "sovereign_agent_node_duration_seconds", "Agent pipeline node latency.", ["node"], buckets=LATENCY_BUCKETS
)
AGENT_DEGRADED = Counter(
    "sovereign_agent_degraded_total", "Agent runs that fell back to the simple path, by failing node.", ["node"]
)

# -- deployments and rollouts (the basis of canary analysis: sovereign.flags.analysis) ----------
DEPLOYMENT_REQUESTS = Counter(
    "sovereign_deployment_requests_total",
    "Generations asked of one deployment of a model, by outcome (ok, error); a fallback counts on both.",
    ["model", "deployment", "outcome"],
)
DEPLOYMENT_DURATION = Histogram(
    "sovereign_deployment_request_duration_seconds",
    "One successful generation on one deployment, from its call to its last chunk.",
    ["model", "deployment"], buckets=LATENCY_BUCKETS,
)
DEPLOYMENT_TTFT = Histogram(
    "sovereign_deployment_time_to_first_token_seconds",
    "Time from calling one deployment to its first chunk (TTFT per deployment, retries included).",
    ["model", "deployment"], buckets=LATENCY_BUCKETS,
)
ROLLOUT_CANDIDATE_PERCENT = Gauge(
    "sovereign_rollout_candidate_percent",
    "Percent of first picks a rollout sends to its candidate deployment (0 after a rollback).",
    ["model", "candidate"], multiprocess_mode="livemax",
)
ROLLOUT_PROMOTIONS = Counter(
    "sovereign_rollout_promotions_total", "Rollout stages passed (each step up, and the last to 100 %).",
    ["model", "candidate"],
)
ROLLOUT_ROLLBACKS = Counter(
    "sovereign_rollout_rollbacks_total",
    "Rollouts sent back to stable, by reason (error_ratio, p95, p99, ttft_p95, manual).",
    ["model", "candidate", "reason"],
)
FLAG_EVALUATIONS = Counter(
    "sovereign_flag_evaluations_total", "Feature flag evaluations by flag, variant and reason.",
    ["flag", "variant", "reason"],
)
FLAG_REQUESTS = Counter(
    "sovereign_flag_requests_total",
    "Generation requests by the variant a rolled-out flag served them (on, off, or a variant name) and outcome.",
    ["flag", "variant", "outcome"],
)
FLAG_REQUEST_DURATION = Histogram(
    "sovereign_flag_request_duration_seconds",
    "Successful generation requests by the variant a rolled-out flag served them, receipt to last byte.",
    ["flag", "variant"], buckets=LATENCY_BUCKETS,
)

# -- drift on live traffic (sovereign.observability.drift_monitor; every worker computes the same report
# from the shared drift database, so workers combine with livemax) -------------------------------
DRIFT_SCORE = Gauge(
    "sovereign_drift_score",
    "Effect size of the last drift check by signal and test: Cramér's V (chi2), KS D (ks) or PSI (psi).",
    ["signal", "test"], multiprocess_mode="livemax",
)
DRIFT_P_VALUE = Gauge(
    "sovereign_drift_p_value", "p-value of the last drift check by signal and test (chi2, ks); 1 without data.",
    ["signal", "test"], multiprocess_mode="livemax",
)
DRIFT_DETECTED = Gauge(
    "sovereign_drift_detected",
    "1 when the last check found the signal drifted from its baseline (p < drift.alpha and a large enough effect).",
    ["signal"], multiprocess_mode="livemax",
)
DRIFT_WINDOW_SAMPLES = Gauge(
    "sovereign_drift_window_samples", "Observations of the signal in the last drift check's window.", ["signal"],
    multiprocess_mode="livemax",
)
