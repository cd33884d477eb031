"""The service's settings: one frozen object, from ``REWARDSERVE_*`` environment variables and CLI flags.

Built once (``rewardserve serve`` / ``create_app``) and passed down; nothing deeper reads the
environment. Every field's description is its documentation: ``rewardserve serve --help`` prints them,
and the reference table of ``docs/settings.md`` is generated from the same text (:func:`reference_table`;
``python3 -m service.settings`` rewrites it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from service.engines import AUTO, BACKEND_CHOICES, VARIANT_CHOICES, incoherent, known

Device = Literal["cpu", "cuda"]


class ServiceSettings(BaseSettings):
    """Everything ``rewardserve serve`` can be told; env var = ``REWARDSERVE_`` + the field name upper-cased."""

    model_config = SettingsConfigDict(env_prefix="REWARDSERVE_", frozen=True, extra="forbid")

    model: Annotated[tuple[str, ...], NoDecode] = Field(
        (), description="bundle directory to serve (written by `rewardserve train`); repeat as NAME=DIR to serve "
                        "several, each picked by a request's \"model\" (the first answers requests that name none)")
    models_file: Path | None = Field(None, description="YAML file of the models to serve: bundles, ensembles, "
                                     "traffic splits and shadows, each with its own backend, variant and limits "
                                     "(docs: Several models). SIGHUP reads it again and swaps what changed")
    model_name: str = Field("", description="name reported to clients; default: the card's name")
    backend: str = Field(AUTO, description="auto: the fastest engine the bundle has on this machine, measured at "
                         "start (and remembered); onnx: onnxruntime on an exported variant (no torch needed); "
                         "openvino: OpenVINO on an exported variant (CPU); torch: the safetensors checkpoint",
                         json_schema_extra={"choices": list(BACKEND_CHOICES)})
    variant: str = Field(AUTO, description="numeric format: auto (with the backend, by measurement, among the "
                         "variants that passed the parity gate), fp32 (exact), int8 (dynamic), int8-static "
                         "(calibrated), fp16 (GPU), bf16 (torch on GPU)",
                         json_schema_extra={"choices": list(VARIANT_CHOICES)})
    openvino_precision: Literal["f32", "bf16"] = Field(
        "f32", description="openvino backend: precision of the ops that are not quantized (bf16 is faster on "
                           "CPUs with avx512_bf16 or AMX; the export's parity gate checked f32)")
    device: Device = Field("cpu", description="where the model runs")
    pack: Literal["auto", "on", "off"] = Field(
        "auto", description="torch backend: score a batch's items packed into one sequence (varlen attention: no "
                            "padding computed, the head run on the rows it reads). auto: on CUDA, where the model "
                            "packs and its first batch scores as padded; on: on any device, or refuse to start; off: "
                            "padded batches")
    tensorrt: bool = Field(False, description="onnx on cuda: try onnxruntime's TensorRT provider first (slow "
                                              "first batches while engines build)")
    threads: int = Field(0, ge=0, description="intra-op threads of the backend (all its streams together); 0: the "
                                              "library's default")
    streams: int = Field(1, ge=1, le=64, description="batches the backend scores at once (onnx and openvino on CPU), "
                                                     "each on threads/streams cores: more than 1 keeps shared cores "
                                                     "busy under many small requests, at some cost in the latency of "
                                                     "a request that runs alone")
    onnx_spin: bool = Field(False, description="onnxruntime's intra-op threads busy-wait between ops: on only when "
                                               "the backend has its cores to itself (off: +20-25% served "
                                               "throughput on 2 shared cores)")
    host: str = Field("127.0.0.1", description="address to bind (0.0.0.0 in a container)")
    port: int = Field(8000, ge=0, le=65535, description="TCP port (0: any free port)")
    max_batch_tokens: int = Field(8192, ge=8, description="padded tokens (rows × longest) per batch, or real "
                                                          "tokens where the torch backend packs; raise it on a GPU "
                                                          "(65536 holds 64 items of 1,024), lower it for latency on "
                                                          "a small CPU")
    max_batch_items: int = Field(64, ge=1, description="items per batch, whatever their length")
    max_wait_ms: float = Field(0.0, ge=0, description="how long a batch that is not full may wait for more items; "
                                                      "0: an idle backend starts at once")
    sort_window_items: int = Field(1024, ge=1, description="oldest queued items sorted by length when a batch is "
                                                           "cut (less padding); the oldest item always goes first")
    max_batch_padding: float = Field(0.1, ge=0, le=1, description="a batch stops growing when more than this "
                                     "share of it would be padding (wasted compute); 1: fill to the limits. Raise "
                                     "it on GPUs, where bigger batches matter more than padding")
    max_items_per_request: int = Field(512, ge=1, description="items (or documents) in one request; more: 413")
    max_body_bytes: int = Field(16 << 20, ge=1024, description="request body size limit in bytes; more: 413")
    max_item_tokens: int = Field(0, ge=0, description="tokens per item; longer items are truncated by the card's "
                                                      "policy and counted. 0: the card's max_length")
    max_request_tokens: int = Field(1 << 20, ge=1, description="tokens in one request after truncation; more: 413")
    max_queue_items: int = Field(4096, ge=1, description="items queued or running per served model (each has its "
                                                         "own queue): the bound on memory; a request that would pass "
                                                         "it gets 429 with Retry-After")
    request_timeout_s: float = Field(60.0, gt=0, description="per-request deadline: a request whose scores would "
                                     "likely not be ready by then gets 429 at once (admission by time); one whose "
                                     "scores are still not ready by then gets 504, and its queued items are dropped")
    batch_stall_s: float = Field(30.0, gt=0, description="a batch running longer than this and 10x its expected "
                                 "time means the backend is stuck: /healthz answers 503 so the pod is restarted")
    api_keys: Annotated[tuple[str, ...], NoDecode] = Field(
        (), repr=False, description="comma-separated Bearer keys; set: scoring endpoints answer 401 without one "
                                    "(environment only, never a flag)")
    feedback_db: str | None = Field(None, description="feedback store: a SQLite file path, sqlite:///…, or "
                                    "postgresql://… (a password goes in REWARDSERVE_FEEDBACK_DB or PGPASSWORD, never "
                                    "a flag). Unset: POST /feedback is off", repr=False)
    feedback_keys: Annotated[tuple[str, ...], NoDecode] = Field(
        (), repr=False, description="comma-separated Bearer keys for /feedback only. Set: /feedback takes these and "
                                    "not the API keys, and these cannot score. Unset: /feedback takes the API keys "
                                    "(environment only, never a flag)")
    collect_for_labeling: bool = Field(False, description="queue live /rerank requests (and /score requests with "
                                       "several completions of one prompt) for human labeling, the ones the "
                                       "model is least sure of first. Off by default: it stores live user text in "
                                       "the feedback database")
    collect_rate: float = Field(0.05, ge=0, le=1, description="share of eligible live requests sampled for labeling")
    collect_per_hour: int = Field(1000, ge=0, description="most live items queued for labeling per hour")
    annotator_keys: Annotated[tuple[str, ...], NoDecode] = Field(
        (), repr=False, description="comma-separated NAME:KEY pairs, one per annotator: the labeling page and "
                                    "/label/next|submit take these, and the name is recorded with each judgement. "
                                    "Unset: labeling is off (environment only, never a flag)")
    label_annotations: int = Field(2, ge=1, le=50, description="different annotators each labeling task goes "
                                   "to (agreement needs at least 2)")
    admin_keys: Annotated[tuple[str, ...], NoDecode] = Field(
        (), repr=False, description="comma-separated Bearer keys for /admin (hot swap). Unset: /admin is off "
                                    "(environment only, never a flag)")
    swap_memory_bytes: int = Field(0, ge=0, description="memory a hot swap may use to load a new version beside "
                                   "the old one; a bundle whose files need more is refused. 0: what the machine "
                                   "has available (MemAvailable, or the cgroup limit when lower)")
    protect_metrics: bool = Field(False, description="with API keys set, /metrics needs a key too (Prometheus "
                                                     "then sends it as a bearer token)")
    protect_health: bool = Field(False, description="with API keys set, /healthz and /readyz need a key too (probes "
                                                    "must then send it)")
    normalize: bool = Field(False, description="default for requests that do not say: centre scores with the "
                                               "card's normalization, (r - mean) / std")
    monitors: bool = Field(True, description="serve-time reward-hacking monitors (rewardserve_monitor_*): rolling "
                           "windows of what each model scores, per x-run-id; figures are computed at scrape time")
    monitor_window_items: int = Field(10_000, ge=10, description="items each monitor keeps (per model version "
                                      "and run): the window=items figures, and the bound on the window=5m ones")
    monitor_max_runs: int = Field(32, ge=1, description="x-run-id values monitored at once; the least recently "
                                  "used is dropped beyond it (a label per run: bounded series)")
    tokenizer_threads: int = Field(2, ge=1, description="threads that tokenize requests off the event loop")
    warmup: bool = Field(True, description="run a few batches before /readyz says ready")
    trust_remote_code: bool = Field(False, description="allow a checkpoint's own Python code: to import a model "
                                    "that has it (ArmoRM, internlm2-reward, Qwen2.5-Math-PRM) and to run it on the "
                                    "torch backend. Read the code first")
    home: Path = Field(Path.home() / ".cache" / "rewardserve", description="where models imported on start (a "
                       "plain directory or hub name given as a model) are kept, and which bundle files were "
                       "verified, so a large bundle is hashed once; the demo keeps its model and feedback here")
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="log level")
    access_log: bool = Field(False, description="log every request (uvicorn's access log)")

    @field_validator("model", mode="before")
    @classmethod
    def _models(cls, value: Any) -> Any:
        if value is None:
            return ()
        if isinstance(value, (str, Path)):
            return tuple(v.strip() for v in str(value).split(",") if v.strip())
        return tuple(str(v) for v in value)

    @field_validator("api_keys", "feedback_keys", "admin_keys", "annotator_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(k.strip() for k in value.split(",") if k.strip())
        return value

    @field_validator("backend", "variant")
    @classmethod
    def _known(cls, value: str, info: ValidationInfo) -> str:
        return known(str(info.field_name), value)

    @model_validator(mode="after")
    def _coherent(self) -> ServiceSettings:
        if (problem := incoherent(self.backend, self.variant, self.device, self.streams)) is not None:
            raise ValueError(problem)
        if self.pack == "on" and self.backend not in ("torch", AUTO):
            raise ValueError(f"pack=on packs the torch backend's batches; the {self.backend} backend pads them")
        if self.threads and self.threads < self.streams:
            raise ValueError(f"{self.streams} streams need at least {self.streams} threads (one each); got "
                             f"threads={self.threads}")
        if self.max_item_tokens and self.max_item_tokens > self.max_batch_tokens:
            raise ValueError("max_item_tokens must not exceed max_batch_tokens, or a long item could never run")
        if any(":" not in k or not k.split(":", 1)[0] or not k.split(":", 1)[1] for k in self.annotator_keys):
            raise ValueError("annotator_keys are NAME:KEY pairs, e.g. alice:s3cret,bob:t0psecret")
        if self.collect_for_labeling and not self.feedback_db:
            raise ValueError("collect_for_labeling queues items in the feedback database: set feedback_db too")
        if self.model and self.models_file:
            raise ValueError("give either --model or --models-file, not both")
        if self.max_queue_items < self.max_items_per_request:
            raise ValueError("max_queue_items must be at least max_items_per_request, or a full request always 429s")
        return self


SECRET_SETTINGS = ("api_keys", "feedback_keys", "admin_keys", "annotator_keys")
"""Settings taken from the environment only: a flag would show them in ``ps`` and shell history."""


def setting_fields() -> list[tuple[str, Any, str, tuple[str, ...] | None]]:
    """(name, default, description, choices) of every setting a flag may set (keys excluded)."""
    out = []
    for name, info in ServiceSettings.model_fields.items():
        if name in SECRET_SETTINGS:
            continue
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        listed = extra.get("choices")
        choices = listed if isinstance(listed, list) else getattr(info.annotation, "__args__", None)
        literal = tuple(str(c) for c in choices) if choices and all(isinstance(c, str) for c in choices) else None
        out.append((name, info.default, info.description or "", literal))
    return out


REFERENCE = Path(__file__).resolve().parents[1] / "docs" / "settings.md"
BEGIN, END = "<!-- settings:begin -->", "<!-- settings:end -->"


def reference_table() -> str:
    """Every setting as a Markdown table row: name, environment variable, default, and its description."""
    rows = ["| setting | environment | default | meaning |", "|---|---|---|---|"]
    for name, info in ServiceSettings.model_fields.items():
        default = info.default
        if isinstance(default, Path) and default.is_relative_to(Path.home()):
            default = f"~/{default.relative_to(Path.home())}"  # not this machine's home, whoever generates it
        shown = "none" if default is None or default == () else "" if default == "" else f"`{default}`"
        rows.append(f"| `{name}` | `REWARDSERVE_{name.upper()}` | {shown} | {info.description} |")
    return "\n".join(rows)


def write_reference(page: Path = REFERENCE) -> bool:
    """Put :func:`reference_table` between the page's markers; True when the page changed."""
    text = page.read_text(encoding="utf-8")
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    new = f"{head}{BEGIN}\n{reference_table()}\n{END}{tail}"
    if new != text:
        page.write_text(new, encoding="utf-8")
    return new != text


if __name__ == "__main__":
    print("docs/settings.md " + ("rewritten" if write_reference() else "already up to date"))
