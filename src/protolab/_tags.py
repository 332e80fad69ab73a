"""Every ``protolab.*`` MLflow tag and Optuna user-attr name, in one place.

Runs written by one version are read by another (``report``, ``ls``, ``ui``, a teammate's
worker), so these names are a storage format: change them here or nowhere.
"""

from __future__ import annotations

__all__ = ["ATTR", "TAG"]


class TAG:
    """MLflow run tags."""

    STUDY = "protolab.study"
    TRIAL = "protolab.trial"
    ROLE = "protolab.role"  # parent | child | watch (a watch session's own parent run)
    BACKEND = "protolab.backend"  # the mode's registry name
    FAMILY = "protolab.family"  # dynamic | static
    MODE = "protolab.mode"  # a few words: eager, compiled, graph, XLA, jit
    EAGER = "protolab.eager"  # "true" on the reference every break-even is measured against
    AUTO = "protolab.auto"  # alias -> the mode it picked, e.g. "static-><mode>"
    CALIBRATION = "protolab.calibration"  # the calibration's step times per candidate
    PAIR = "protolab.pair"  # shared by every run of one paired configuration
    REPEAT = "protolab.repeat"  # 0..K-1 when a pair is re-measured (--repeat K)
    ARCH_HASH = "protolab.arch_hash"
    SCRIPT_HASH = "protolab.script_hash"
    CONFIG_HASH = "protolab.config_hash"
    METRIC = "protolab.metric"
    DATA = "protolab.data"
    STATE = "protolab.state"  # COMPLETE | PRUNED | FAIL | INTERRUPTED
    FAIL_REASON = "protolab.fail_reason"
    COLD_START = "protolab.cold_start"
    # classification: probabilities (the model ends in a softmax: its loss takes them as
    # they are, on every mode) | logits (the loss applies the softmax)
    OUTPUT = "protolab.output"
    MUTATION = "protolab.mutation"
    PARENT_TRIAL = "protolab.parent_trial"
    DIRECTION = "protolab.direction"
    CHECKPOINT = "protolab.checkpoint"  # kept | deleted | outside the best: the trained weights
    CHECKPOINT_RANK = "protolab.checkpoint_rank"  # JSON: the trial's value, direction, feasible
    WATCH = "protolab.watch"  # a `protolab watch` session's name, on its parent and reruns
    WATCH_BACKENDS = "protolab.watch.backends"  # a watch session's backends, comma-separated
    WATCH_JOB = "protolab.watch.job"  # a watch session's short job: epochs=.. steps=..
    PREFIX = "protolab."
    # The study's id (ATTR.STUDY_ID), on its parent and every child run: binds the runs to
    # the one study store that made them (a lost or replaced journal is noticed, not reused)
    STUDY_ID = "protolab.study_id"


class ATTR:
    """Optuna trial and study user attributes."""

    WORKER = "protolab.worker"
    WORKER_SCOPE = "protolab.worker_scope"  # where the worker's pid is visible (boot + pidns)
    CUDA_VISIBLE_DEVICES = "protolab.cuda_visible_devices"  # the worker's GPU(s)
    LEASE_UNTIL = "protolab.lease_until"  # epoch seconds: a store without heartbeats (gRPC)
    SCRIPT_HASH = "protolab.script_hash"
    FAIL_REASON = "protolab.fail_reason"
    METRICS = "protolab.metrics"
    JOINED = "protolab.workers_joined"  # study: workers that opened it (seeds them apart)
    OBJECTIVES = "protolab.objectives"
    METRIC = "protolab.metric"
    RETRY_OF = "protolab.retry_of"
    ATTEMPT = "protolab.attempt"
    PARENT_TRIAL = "protolab.parent_trial"
    ENQUEUED = "protolab.enqueued"
    MUTATED = "protolab.mutated"  # evolution: what the mutation changed
    SCRIPT_HASHES = "protolab.script_hashes"  # study attr: every script version, in order
    CONFIG_HASHES = "protolab.config_hashes"  # study attr: every config version, in order
    AUTO = "protolab.auto"  # study attr prefix: protolab.auto.<family>.<key> -> chosen mode
    STUDY_ID = "protolab.study_id"  # study attr: a uuid drawn when the study is created
