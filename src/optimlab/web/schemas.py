"""What the web lab's API accepts: pydantic models that check types, ranges and names.

Everything a request can carry is checked here before the engine sees it: numbers must be real
and finite (``NaN`` / ``Infinity`` / ``1e999`` are refused, and so are booleans and strings where
a number belongs: the models are strict), names must be known (an unknown one is answered with
the closest valid name), every hyperparameter must belong to the optimizer it is given for, and
a schedule must parse. How much work a request may ask for (steps, trajectories, grid points)
is a server setting, :class:`Limits`, checked by :func:`check_limits` after the model is valid.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Annotated, Any

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .. import catalogue, schedules
from ..catalogue import Entry
from ..lab.engine import get_optimizer, prepare
from ..lab.formula import MAX_COORDINATE, MAX_LENGTH as MAX_FORMULA
from ..lab.landscapes import LANDSCAPES, get_landscape
from .custom import NAME as CUSTOM, check_reference, check_starts

#: the hyperparameters the page lets a learner drag, by the rule's names, with their ranges
#: (``(low, high, low_open, high_open)``) and a one-line meaning
KNOB_RANGES: dict[str, tuple[float, float, bool, bool]] = {
    "momentum": (0.0, 1.0, False, True),
    "alpha": (0.0, 1.0, False, True),
    "beta1": (0.0, 1.0, False, True),
    "beta2": (0.0, 1.0, False, True),
    "eps": (0.0, 1.0, True, False),
}
KNOB_HELP = {
    "momentum": "momentum coefficient (beta of the velocity)",
    "alpha": "decay of the EWMA of squared gradients",
    "beta1": "decay of the first moment (EWMA of gradients)",
    "beta2": "decay of the second moment (EWMA of squared gradients)",
    "eps": "added to the denominator for numerical stability",
}
LR_RANGE = (0.0, 100.0)  # lr in (0, 100]


def knobs(spec: Entry) -> dict[str, float]:
    """The draggable hyperparameters of a lab optimizer and their default values.

    ``momentum`` is a knob only for the optimizers that stand for a momentum method (plain GD and
    RMSProp have the argument, at 0, but turning it on would make them another optimizer).
    """
    return dict(_knobs(get_optimizer(spec).name))


@lru_cache(maxsize=256)
def _knobs(name: str) -> dict[str, float]:
    spec = get_optimizer(name)
    kwargs, _ = prepare(spec, 1, spec.lab_lr, {}, torch.float64)
    out = {}
    for name in KNOB_RANGES:
        if name not in kwargs:
            continue
        if name == "momentum" and "momentum" not in spec.options:
            continue
        out[name] = float(kwargs[name])
    return out



#: hard caps on the shape of a request (the configurable, usually smaller, caps are in Limits):
#: they bound the work of parsing and validating before Limits are looked at
HARD_MAX_STEPS = 100_000
HARD_MAX_LIST = 64
HARD_MAX_NAME = 64


@dataclass(frozen=True)
class Limits:
    """How much one request may ask of the server.

    ``max_steps``         steps per run
    ``max_starts``        start points per request
    ``max_optimizers``    optimizer entries per request
    ``max_total_steps``   ``steps * optimizers``: the engine's cost is about one step of every
                          optimizer entry at a time (a batch of starts costs little more than one)
    ``max_points``        ``(steps + 1) * trajectories`` points returned by one request
    ``max_grid``          landscape grid resolution (points per axis)
    ``time_budget_s``     wall time one run request may take from its arrival, queueing included;
                          a run still queued at the budget gets a 429, one still running a 422
    ``light_cost``        a run whose cost (:func:`cost`) is at most this is *light*: light and
                          heavy runs have their own slots and queues, so heavy work never delays
                          a light run, and neither delays ``/api/meta`` or the page
    ``light_running``     light runs computing at once; ``light_queue`` more may wait
    ``heavy_running``     heavy runs computing at once; ``heavy_queue`` more may wait; a run that
                          finds its queue full is answered 429 with ``Retry-After`` at once
    ``max_body_bytes``    request bodies larger than this get a 413
    ``max_state_steps``   steps of a run that asks for the optimizer's state per step (``state``)
    ``max_map_side``      learning rates (and betas) per side of a stability map (``/api/stability``)
    ``max_map_work``      ``cells x steps x rule cost`` of one stability map (one batched engine run)
    """

    max_steps: int = 2000
    max_starts: int = 8
    max_optimizers: int = 12
    max_total_steps: int = 6000
    max_points: int = 100_000
    max_grid: int = 301
    time_budget_s: float = 5.0
    light_cost: int = 12_000
    light_running: int = 2
    light_queue: int = 8
    heavy_running: int = 1
    heavy_queue: int = 2
    max_body_bytes: int = 64 * 1024
    max_state_steps: int = 1000
    max_map_side: int = 40
    max_map_work: int = 1_600_000

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _range(low: float, high: float, low_open: bool, high_open: bool) -> dict[str, float]:
    return {("gt" if low_open else "ge"): low, ("lt" if high_open else "le"): high}


def _knob(name: str) -> Any:
    return Field(default=None, allow_inf_nan=False, description=KNOB_HELP[name], **_range(*KNOB_RANGES[name]))


Coordinate = Annotated[float, Field(allow_inf_nan=False)]
Point = Annotated[list[Coordinate], Field(min_length=2, max_length=2)]
WindowCoordinate = Annotated[float, Field(allow_inf_nan=False, ge=-MAX_COORDINATE, le=MAX_COORDINATE)]
WindowRange = Annotated[list[WindowCoordinate], Field(min_length=2, max_length=2)]
#: a formula landscape's fields (``landscape="custom"``); see :mod:`optimlab.lab.formula` for the grammar
FormulaField = Field(default=None, min_length=1, max_length=MAX_FORMULA,
                     description=f"with landscape '{CUSTOM}': f(x, y) as a formula (numbers, x, y, pi, e, + - * / ^, "
                                 "parentheses, sin cos exp log sqrt tanh abs; implicit products like 2x)")
WindowField = Field(default=None, min_length=2, max_length=2,
                    description=f"with landscape '{CUSTOM}': [[x_min, x_max], [y_min, y_max]] (default [[-3, 3], [-3, 3]])")


class OptimizerSpec(BaseModel):
    """One optimizer of a run request: a lab optimizer's name, its lr and any of its knobs."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: str = Field(min_length=1, max_length=HARD_MAX_NAME, json_schema_extra={"enum": catalogue.names()},
                      description="a lab optimizer (an unknown name is answered with the closest valid one)")
    lr: float | None = Field(default=None, allow_inf_nan=False, gt=LR_RANGE[0], le=LR_RANGE[1],
                             description="learning rate (default: the optimizer's lab default)")
    momentum: float | None = _knob("momentum")
    alpha: float | None = _knob("alpha")
    beta1: float | None = _knob("beta1")
    beta2: float | None = _knob("beta2")
    eps: float | None = _knob("eps")

    @field_validator("name")
    @classmethod
    def _known_optimizer(cls, value: str) -> str:
        return get_optimizer(value).name  # ValueError with a close-match suggestion

    @model_validator(mode="after")
    def _knobs_belong(self) -> "OptimizerSpec":
        allowed = knobs(self.name)
        for key in KNOB_RANGES:
            if getattr(self, key) is not None and key not in allowed:
                has = ", ".join(["lr", *allowed]) if allowed else "lr"
                raise ValueError(f"{self.name} has no hyperparameter {key!r} (it has: {has})")
        return self

    def hyper(self) -> dict[str, float]:
        """The knobs given in the request (the engine uses its defaults for the rest)."""
        return {k: getattr(self, k) for k in KNOB_RANGES if getattr(self, k) is not None}


#: bounds of the gradient-noise fields (:mod:`optimlab.lab.noise`)
NOISE_MAX_SD = 100.0
NOISE_MAX_BATCH = 10_000
NOISE_MAX_SEED = 2 ** 31 - 1


class NoiseSpec(BaseModel):
    """Noisy gradients (the lab's stochastic mode, :mod:`optimlab.lab.noise`): additive Gaussian
    noise of ``sd`` per coordinate and/or ``batch`` examples per step on a data landscape."""

    model_config = ConfigDict(extra="forbid", strict=True)

    sd: float = Field(default=0.0, allow_inf_nan=False, ge=0, le=NOISE_MAX_SD,
                      description="standard deviation of the Gaussian noise added to each gradient coordinate")
    batch: int | None = Field(default=None, ge=1, le=NOISE_MAX_BATCH,
                              description="examples per step on a data landscape (least_squares, scaled_features); "
                                          "null: all of them")
    seed: int = Field(default=0, ge=0, le=NOISE_MAX_SEED, description="seed of every draw")

    def spec(self) -> str:
        """The spec string of :func:`optimlab.lab.noise.parse_noise` (the page's ``noise=`` field)."""
        from ..lab.noise import Noise

        return Noise(self.sd, self.batch, self.seed).spec()


class LandscapeFields(BaseModel):
    """A request's landscape: a built-in one by name, or ``custom`` with a formula and window."""

    model_config = ConfigDict(extra="forbid", strict=True)

    landscape: str = Field(min_length=1, max_length=HARD_MAX_NAME, json_schema_extra={"enum": [*LANDSCAPES, CUSTOM]},
                           description=f"a landscape of the lab, or '{CUSTOM}' with a formula")
    formula: str | None = FormulaField
    window: list[WindowRange] | None = WindowField

    @field_validator("landscape")
    @classmethod
    def _known_landscape(cls, value: str) -> str:
        return value if value == CUSTOM else get_landscape(value).name


class RunRequest(LandscapeFields):
    """``POST /api/run``: every optimizer from every start on one landscape."""

    model_config = ConfigDict(extra="forbid", strict=True)

    starts: list[Point] = Field(min_length=1, max_length=HARD_MAX_LIST,
                                description="start points [x, y] inside the landscape's window")
    optimizers: list[OptimizerSpec] = Field(min_length=1, max_length=HARD_MAX_LIST)
    steps: int = Field(ge=1, le=HARD_MAX_STEPS)
    schedule: str = Field(default="constant", min_length=1, max_length=HARD_MAX_NAME,
                          json_schema_extra={"pattern": r"^(constant|none|cosine|exponential(:[0-9.eE+-]{1,24})?|"
                                                        r"(step|warmup|warmup-cosine)(:[0-9]{1,6}(:[0-9.eE+-]{1,24})?)?)$"},
                          description="a schedule of optimlab.schedules (not plateau: it needs a validation metric)")
    tol: float = Field(default=1e-6, allow_inf_nan=False, gt=0, le=1e6,
                       description="loss gap f - f* that counts as converged (metric steps_to_tol)")
    noise: NoiseSpec | None = Field(default=None, description="noisy gradients (null: exact gradients)")
    state: bool = Field(default=False, description="also send each step's gradient, optimizer state and step "
                                                    "(steps at most Limits.max_state_steps)")

    @model_validator(mode="after")
    def _starts_and_schedule(self) -> "RunRequest":
        check_starts(self.landscape, check_reference(self.landscape, self.formula, self.window), self.starts)
        schedules.factors(self.schedule, self.steps)  # ValueError naming the allowed forms
        if self.noise is not None and self.noise.batch is not None:
            from ..lab.sampled import DATA_LANDSCAPES

            if self.landscape not in DATA_LANDSCAPES:
                raise ValueError(f"noise.batch needs a data landscape ({', '.join(DATA_LANDSCAPES)}); "
                                 f"{self.landscape} has no examples to sample (use noise.sd)")
        return self


#: relative cost of one step of one trajectory: NAG evaluates the landscape twice (loss at w,
#: gradient at the look-ahead point)
def rule_cost(name: str) -> int:
    return 2 if get_optimizer(name).lookahead else 1


#: a run with noisy gradients runs on the engine, not the fast path
ENGINE_COST = 10


def cost(req: RunRequest) -> int:
    """The work a run asks for, in trajectory-steps: ``steps x starts x sum of rule costs``
    (times :data:`ENGINE_COST` for a run the engine computes: noisy gradients)."""
    engine = ENGINE_COST if req.noise is not None and (req.noise.sd > 0 or req.noise.batch) else 1
    return req.steps * len(req.starts) * sum(rule_cost(o.name) for o in req.optimizers) * engine


def check_limits(req: RunRequest, limits: Limits) -> None:
    """Raise ValueError when a valid request asks for more work than the server allows."""
    if req.steps > limits.max_steps:
        raise ValueError(f"steps must be <= {limits.max_steps} on this server, got {req.steps}")
    if len(req.starts) > limits.max_starts:
        raise ValueError(f"at most {limits.max_starts} start points per request, got {len(req.starts)}")
    if len(req.optimizers) > limits.max_optimizers:
        raise ValueError(f"at most {limits.max_optimizers} optimizers per request, got {len(req.optimizers)}")
    total = req.steps * len(req.optimizers)
    if total > limits.max_total_steps:
        raise ValueError(f"steps x optimizers = {total} is more than this server's {limits.max_total_steps}; "
                         "ask for fewer steps or optimizers")
    if req.state and req.steps > limits.max_state_steps:
        raise ValueError(f"steps must be <= {limits.max_state_steps} when the state is asked for (state: true), "
                         f"got {req.steps}")
    points = (req.steps + 1) * len(req.starts) * len(req.optimizers)
    if points > limits.max_points:
        raise ValueError(f"(steps + 1) x starts x optimizers = {points} points is more than this server's "
                         f"{limits.max_points}; ask for fewer steps, starts or optimizers")


# --- what the server sends (documented in the OpenAPI schema; the tests check it is what is sent) ---

class ErrorDetail(BaseModel):
    field: str = Field(description="where in the request (e.g. optimizers[0].lr), or 'request'")
    message: str


class ErrorResponse(BaseModel):
    """Every 4xx: one line for the page, and one entry per problem."""

    error: str
    details: list[ErrorDetail]


Number = float | None  # non-finite values (a diverged run) are sent as null


class MetricsRow(BaseModel):
    """``optimlab.lab.metrics.rows`` for one trajectory."""

    model_config = ConfigDict(extra="forbid")

    optimizer: str
    landscape: str
    lr: float
    x0: float
    y0: float
    x_final: Number
    y_final: Number
    final_loss: Number
    loss_gap: Number
    nearest_minimum: int
    distance_to_minimum: Number
    steps_to_tol: int
    path_length: Number
    displacement: Number
    straightness: Number
    oscillation: int
    diverged: bool
    escaped_saddle: bool
    steps_to_escape: int


class StepState(BaseModel):
    """Step ``t`` (1..steps) of each start, indexed ``[t - 1][start][axis]``: the gradient the rule
    was given (at the look-ahead point for NAG; noisy with noise) and the rule's state after the step
    by its own names (``momentum_buffer``, ``exp_avg``, ``exp_avg_sq``, ``sum``, ``square_avg``, ...);
    ``roles`` says which state is the velocity / first moment and which the squared-gradient
    accumulator (from the catalogue). The step taken is ``path[t] - path[t - 1]``."""

    model_config = ConfigDict(extra="forbid")

    grad: list[list[list[Number]]]
    values: dict[str, list[list[list[Number]]]]
    roles: dict[str, str]


class RunResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    label: str
    colour: str
    lr: float
    hyper: dict[str, float]
    path: list[list[list[Number]]] = Field(description="(steps + 1) x starts x 2")
    loss: list[list[Number]] = Field(description="(steps + 1) x starts")
    left_window: list[int | None] = Field(description="per start: the first step outside the window or "
                                                      "non-finite (the page draws the path up to it), or null")
    metrics: list[MetricsRow]
    state: StepState | None = Field(default=None, description="with state: true in the request")



class RunResponse(BaseModel):
    model_config = ConfigDict(extra="forbid")

    landscape: str
    steps: int
    schedule: str
    lr_factors: list[float]
    tol: float
    f_star: float
    starts: list[list[float]]
    noise: str | None = Field(default=None, description="the noise spec the run used (null: exact gradients)")
    runs: list[RunResult]
    elapsed_s: float = Field(description="server time of the computation")
    queued_s: float = Field(description="time the request waited for a slot")


class LandscapeGrid(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    resolution: int
    x: list[float]
    y: list[float]
    z: list[list[Number]]
    zplot: list[list[Number]] | None
    log_plot: bool
    zplot_label: str
    log_offset: float = Field(description="zplot = log10(max(z - f*, 0) + log_offset) where log_plot")


class LandscapeInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    formula: str
    description: str
    window: list[list[float]]
    start: list[float]
    minima: list[list[float]]
    saddles: list[list[float]]
    global_minima: int
    log_plot: bool
    min_value: float
    default_lr: dict[str, float]
    examples: int | None = Field(default=None, description="data points of a data landscape (noise batch draws "
                                                           "from them); null for a formula landscape")


class RuleInfo(BaseModel):
    """An optimizer's update rule as the page shows it (:func:`optimlab.catalogue.rule_display`)."""

    model_config = ConfigDict(extra="forbid")

    mathml: list[str] = Field(description="one MathML <math> element per line; <mn data-knob=NAME> holds a value")
    roles: dict[str, str] = Field(description="state name -> 'velocity' or 'accumulator' (step-through view)")
    lookahead: bool = Field(description="the gradient is taken at the look-ahead point w - momentum * v (NAG)")


class OptimizerInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    label: str
    colour: str
    default_lr: float
    knobs: dict[str, float]
    main: bool
    options: dict[str, Any]
    rule: RuleInfo | None = None


class KnobInfo(BaseModel):
    range: list[float]
    open: list[bool]
    help: str


class MetaResponse(BaseModel):
    model_config = ConfigDict(extra="forbid")

    landscapes: list[LandscapeInfo]
    optimizers: list[OptimizerInfo]
    knobs: dict[str, KnobInfo]
    lr_range: list[float]
    schedules: dict[str, list[str]]
    limits: dict[str, float]


class Health(BaseModel):
    model_config = ConfigDict(extra="forbid")

    compute: str = Field(json_schema_extra={"enum": ["processes", "threads"]})
    ready: bool


class PresetLink(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str
    hash: str = Field(description="the page's hash: landscape=..&start=..&steps=..&schedule=..&opt=..[&noise=..]")
    numbers: list[dict[str, Any]] = Field(description="per optimizer and start: what the tour computed for this "
                                                      "link (final_loss, steps_to_tol, nearest_minimum, diverged, "
                                                      "steps_to_escape on a landscape with a saddle)")


class PresetSection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: str
    title: str
    links: list[PresetLink]


class PresetsResponse(BaseModel):
    """``GET /api/presets``: the tour's sections and their "try it" links (:mod:`.presets`)."""

    model_config = ConfigDict(extra="forbid")

    plan: str | None
    tol: float = Field(description="the tol the numbers' steps_to_tol counts with (the page's default)")
    sections: list[PresetSection]
