"""The one settings object, read from ``CELREC_*`` environment variables.

Every setting is documented here (the ``description``) and in docs/settings.md (generated).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "CELREC_"
_SCOPE = r"(?:events:write|scores:read|admin)"
API_KEYS_PATTERN = rf"^[\s;]*(?:[0-9a-fA-F]{{64}}:{_SCOPE}(?:,{_SCOPE})*(?:[\s;]+|$))*$"


class SettingsError(ValueError):
    """A setting has a bad value; the message names the environment variable."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    # Backends
    event_log: Literal["embedded", "kafka"] = Field(
        "embedded", description="event log backend: in-process log or Kafka"
    )
    state_store: Literal["embedded", "redis"] = Field(
        "embedded", description="state store backend: in-process store or Redis"
    )

    # Kafka
    kafka_bootstrap_servers: str = Field(
        "127.0.0.1:9092", description="comma-separated host:port list of Kafka brokers"
    )
    kafka_api_version: str = Field(
        "auto", description="Kafka protocol version, e.g. 0.9 for old brokers; auto detects"
    )
    kafka_events_topic: str = Field("events", min_length=1, description="topic of events")
    kafka_dead_letter_topic: str = Field(
        "events.dlq", min_length=1, description="topic of undecodable or invalid messages"
    )
    kafka_consumer_group: str = Field(
        "celrec-trainer", min_length=1, description="consumer group of the trainer"
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="Kafka security protocol"
    )
    kafka_sasl_mechanism: str | None = Field(None, description="e.g. PLAIN, SCRAM-SHA-256")
    kafka_sasl_username: str | None = Field(None, description="SASL user name")
    kafka_sasl_password: SecretStr | None = Field(None, description="SASL password")
    kafka_ssl_cafile: str | None = Field(None, description="CA bundle for Kafka TLS")
    produce_timeout_s: float = Field(
        5.0, gt=0, le=120, description="how long POST /events waits for the log's ack"
    )

    # Redis
    redis_url: str = Field(
        "redis://127.0.0.1:6379/0", description="Redis URL (redis:// or rediss:// for TLS)"
    )
    state_prefix: str = Field(
        "celrec", min_length=1, pattern=r"^[A-Za-z0-9_.-]+$",
        description="prefix of every state-store key",
    )

    # Embedded event log
    embedded_log_capacity: int = Field(
        1_000_000, ge=1000, description="max unconsumed messages the embedded log holds"
    )
    embedded_log_partitions: int = Field(
        4, ge=1, le=256, description="partitions of each embedded topic"
    )

    # Ingestion
    ingest_max_batch: int = Field(
        1000, ge=1, le=100_000, description="max events in one POST /events"
    )
    ingest_max_body_bytes: int = Field(
        4 * 1024 * 1024, ge=1024, description="max request body size of POST /events"
    )

    # Trainer
    batch_max_events: int = Field(1024, ge=1, le=1_000_000, description="micro-batch size")
    batch_max_wait_ms: int = Field(
        200, ge=1, le=60_000, description="max wait to fill a micro-batch"
    )
    dedup_window: int = Field(
        100_000, ge=0, description="how many recent event ids are remembered for dedup"
    )
    checkpoint_interval_s: float = Field(
        5.0, ge=0, le=3600,
        description="seconds between trainer checkpoints (0: after every batch); "
        "offsets are committed only after a checkpoint stores the batches' effect",
    )
    device: str = Field("auto", description="torch device: auto, cpu, cuda or cuda:N")
    torch_threads: int = Field(
        1, ge=0, le=256, description="CPU threads of the trainer's torch ops, and of the "
        "service's with CELREC_MODEL=saml or dupn (0: torch's default); 1 is fastest on "
        "small shared machines, where threads stall each other",
    )
    model: Literal["mf", "deepfm", "saml", "dupn"] = Field(
        "mf", description="interaction model the trainer learns and the service serves: mf "
        "or deepfm (online CEL with that interaction), saml or dupn"
    )
    embedding_dim: int = Field(32, ge=1, le=1024, description="embedding dimension")
    user_clusters: int = Field(256, ge=1, le=1_000_000, description="user cluster budget")
    item_clusters: int = Field(256, ge=1, le=1_000_000, description="item cluster budget")
    learning_rate: float | None = Field(
        None, gt=0, le=10, description="mf/deepfm: the trainer's Adagrad step on cluster rows; "
        "unset: 0.1 with CELREC_OBJECTIVE=click, 0.03 with rating (chosen on tuning cuts of "
        "several streams, bench/results/prequential_tuning.md)",
    )
    entity_state_capacity: int = Field(
        100_000, ge=1, description="entities per side keeping recent history for reassignment"
    )
    rating_positive_threshold: float = Field(
        4.0, description="a rating event at or above this value counts as a positive label"
    )
    objective: Literal["click", "rating"] = Field(
        "click", description="mf/deepfm: what the model predicts. click: the probability of a "
        "positive (value > 0; a rating at or above CELREC_RATING_POSITIVE_THRESHOLD), log "
        "loss; rating: the event's value itself (e.g. 1-5 stars), squared loss, and /scores "
        "serves predicted values"
    )
    publish_interval_ms: int = Field(
        200, ge=10, le=60_000, description="cadence of model deltas published for serving"
    )
    snapshot_interval_s: float = Field(
        60.0, gt=0, le=86_400, description="seconds between full model snapshots"
    )
    version_grace_s: float = Field(
        120.0, gt=0, description="how long a replaced model version stays readable"
    )
    seen_items_max: int = Field(
        1000, ge=0, le=10_000, description="recent items kept per user to exclude from "
        "recommendations (0 disables; the service reads the newest 1,000)"
    )
    coliked: bool = Field(
        True, description="mf/deepfm: count how often items of one item row are liked close "
        "to items of another (co-liked rows, rows x rows floats whatever the catalogue), so "
        "that recommendations can rank rows co-liked with the user's latest positives where "
        "the trainer finds that it helps"
    )
    seed: int = Field(0, description="random seed of model initialisation")
    max_scenarios: int = Field(
        8, ge=1, le=64, description="saml: scenarios that get their own branch as they appear "
        "(later ones share the auxiliary network); dupn: scenarios with their own embedding "
        "(later ones share one)",
    )
    sequence_length: int = Field(
        50, ge=1, le=1000, description="saml/dupn: recent behaviours kept per user (the "
        "behaviour sequence, also in the state store for serving)",
    )
    deep_learning_rate: float = Field(
        0.005, gt=0, le=1, description="saml/dupn: Adam learning rate of the streaming learner"
    )
    split_every: int = Field(
        30, ge=1, le=100_000, description="saml/dupn: optimiser steps between GPCA splits of "
        "each CEL table (from the gradients accumulated meanwhile)",
    )
    reassign_window: int = Field(
        0, ge=0, le=100_000, description="saml/dupn: recent samples (of the current batch) "
        "whose entities are reassigned by loss after each step (0 disables: on a planted "
        "stream loss moves drifted into a few big clusters)",
    )
    reassign_candidates: int = Field(
        8, ge=1, le=1024, description="saml/dupn: clusters tried per reassignment besides "
        "each entity's own (random live ones plus the newest split child)",
    )
    reassign_evidence: int = Field(
        48, ge=0, le=1000, description="saml/dupn: recent interactions kept per entity (for "
        "CELREC_ENTITY_STATE_CAPACITY entities per side) on which co-click votes and the loss "
        "reassignment judge it (0: votes off, loss on the window's samples only)",
    )
    cluster_votes: bool = Field(
        True, description="saml/dupn: after each step, move the batch's users and items to the "
        "cluster densest in what they were co-clicked with (needs CELREC_REASSIGN_EVIDENCE)",
    )
    initial_clusters: int = Field(
        8, ge=1, le=1_000_000, description="saml/dupn: clusters each CEL table starts with "
        "(capped by the budget); a new id joins one of the live clusters by its id",
    )

    # Service
    score_max_items: int = Field(
        1000, ge=1, le=100_000, description="max item_id values in one GET /scores"
    )
    host: str = Field("127.0.0.1", description="address the HTTP service binds")
    port: int = Field(8000, ge=1, le=65535, description="port the HTTP service binds")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="log level"
    )

    # Operations (metrics, dashboard)
    trainer_metrics_host: str = Field(
        "127.0.0.1", description="address the trainer's /metrics HTTP endpoint binds"
    )
    trainer_metrics_port: int = Field(
        9108, ge=0, le=65535, description="port of the trainer's /metrics endpoint (0 disables)"
    )
    online_metrics_window: int = Field(
        10_000, ge=100, le=1_000_000,
        description="events per scenario in the sliding window of the trainer's progressive "
        "(predict-before-learn) AUC and log loss",
    )

    # Reliability and security
    checkpoint_dir: str | None = Field(
        None, description="directory of the trainer's on-disk checkpoint (one atomically "
        "replaced file; on start the newer of it and the state-store copy is resumed); "
        "unset: state store only",
    )
    api_keys: str = Field(
        "", pattern=API_KEYS_PATTERN,
        description="API keys as space- or ;-separated `sha256hex:scope,scope` entries "
        "(scopes events:write, scores:read, admin); `celrec hash-key` prints an entry; "
        "empty: authentication disabled",
    )
    auth_open_health: bool = Field(True, description="/health/* answers without an API key")
    auth_open_metrics: bool = Field(False, description="/metrics answers without an API key")

    @field_validator("kafka_api_version")
    @classmethod
    def _api_version(cls, value: str) -> str:
        if value != "auto":
            parse_api_version(value)
        return value

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        head, _, index = value.partition(":")
        if head not in {"auto", "cpu", "cuda"} or (index and not index.isdigit()):
            raise ValueError("must be auto, cpu, cuda or cuda:N")
        return value

    @property
    def row_learning_rate(self) -> float:
        """``learning_rate``, or the objective's default when it is unset."""
        if self.learning_rate is not None:
            return self.learning_rate
        return ROW_LEARNING_RATE[self.objective]

    @property
    def kafka_api_version_tuple(self) -> tuple[int, ...] | None:
        if self.kafka_api_version == "auto":
            return None
        return parse_api_version(self.kafka_api_version)


# The row step per objective when CELREC_LEARNING_RATE is unset: squared loss on ratings
# wants a smaller step than log loss on clicks (bench/results/prequential_tuning.md).
ROW_LEARNING_RATE = {"click": 0.1, "rating": 0.03}


def parse_api_version(value: str) -> tuple[int, ...]:
    try:
        parts = tuple(int(p) for p in value.split("."))
    except ValueError:
        raise ValueError("must be 'auto' or dotted numbers such as 0.9 or 2.8.1") from None
    if not 1 <= len(parts) <= 3:
        raise ValueError("must be 'auto' or dotted numbers such as 0.9 or 2.8.1")
    return parts


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment (plus overrides); errors name the variable at fault."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            field = str(error["loc"][0]) if error["loc"] else "?"
            problems.append(f"{ENV_PREFIX}{field.upper()}: {error['msg']}")
        raise SettingsError("invalid settings:\n  " + "\n  ".join(problems)) from None
