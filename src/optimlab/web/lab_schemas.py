"""What ``POST /api/formula`` and ``POST /api/stability`` accept and send (pydantic models with
bounds, in the OpenAPI schema beside :mod:`.schemas`)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .. import schedules
from .custom import NAME as CUSTOM, check_reference, check_starts
from .schemas import (MAX_FORMULA, HARD_MAX_STEPS, LR_RANGE, FormulaField, LandscapeFields, LandscapeGrid, LandscapeInfo,
                      Number, OptimizerSpec, Point, RunRequest, WindowField, WindowRange, knobs)

#: the knob a stability map sweeps against the learning rate, in order of preference
BETA_KNOBS = ("momentum", "beta1")
HARD_MAX_SIDE = 64


def beta_knob(name: str) -> str:
    """The optimizer's beta: ``momentum`` (Momentum, NAG) or ``beta1`` (Adam and kin); ValueError
    naming the optimizers that have one otherwise."""
    have = knobs(name)
    for knob in BETA_KNOBS:
        if knob in have:
            return knob
    raise ValueError(f"{name} has no momentum or beta1 to map against the learning rate "
                     "(a stability map is for Momentum, NAG, Adam and the other optimizers with a beta)")


class FormulaRequest(BaseModel):
    """``POST /api/formula``: a formula landscape's facts and grid (the page's contour)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    formula: str = Field(min_length=1, max_length=MAX_FORMULA, description=FormulaField.description)
    window: list[WindowRange] | None = WindowField
    resolution: int = Field(default=121, ge=10, le=HARD_MAX_SIDE * 8, description="grid points per axis")

    @model_validator(mode="after")
    def _parses(self) -> "FormulaRequest":
        check_reference(CUSTOM, self.formula, self.window)
        return self


class FormulaResponse(BaseModel):
    model_config = ConfigDict(extra="forbid")

    landscape: LandscapeInfo
    grid: LandscapeGrid


class StabilityRequest(LandscapeFields):
    """``POST /api/stability``: steps to tolerance over a grid of learning rates (log-spaced) x betas
    (linear), one trajectory per cell from ``start``, as ONE batched engine run.

    A cell's numbers are those of ``POST /api/run`` with the same landscape, start, steps, schedule,
    tol and optimizer knobs at that cell's ``lr`` and beta (``momentum`` for Momentum/NAG, ``beta1``
    for Adam): the optimizer's ``lr`` and beta given here are replaced by the grid's.
    """

    model_config = ConfigDict(extra="forbid", strict=True)

    start: Point | None = Field(default=None, description="the start point (default: the landscape's)")
    optimizer: OptimizerSpec
    steps: int = Field(default=300, ge=1, le=HARD_MAX_STEPS)
    schedule: str = RunRequest.model_fields["schedule"]
    tol: float = RunRequest.model_fields["tol"]
    lr_min: float | None = Field(default=None, allow_inf_nan=False, gt=LR_RANGE[0], le=LR_RANGE[1],
                                 description="smallest learning rate (default: the landscape's default / 100)")
    lr_max: float | None = Field(default=None, allow_inf_nan=False, gt=LR_RANGE[0], le=LR_RANGE[1],
                                 description="largest learning rate (default: the landscape's default x 10)")
    n_lr: int = Field(default=24, ge=2, le=HARD_MAX_SIDE, description="learning rates (log-spaced)")
    beta_min: float | None = Field(default=None, allow_inf_nan=False, ge=0.0, lt=1.0,
                                   description="smallest beta (default 0; 0.01 for NAG, whose look-ahead needs one)")
    beta_max: float | None = Field(default=None, allow_inf_nan=False, ge=0.0, lt=1.0,
                                   description="largest beta (default 0.99)")
    n_beta: int = Field(default=24, ge=2, le=HARD_MAX_SIDE, description="betas (linearly spaced)")

    @model_validator(mode="after")
    def _consistent(self) -> "StabilityRequest":
        window = check_reference(self.landscape, self.formula, self.window)
        if self.start is not None:
            check_starts(self.landscape, window, [self.start])
        beta_knob(self.optimizer.name)
        if self.lr_min is not None and self.lr_max is not None and not self.lr_min < self.lr_max:
            raise ValueError(f"lr_min must be < lr_max, got {self.lr_min:g} and {self.lr_max:g}")
        if self.beta_min is not None and self.beta_max is not None and not self.beta_min < self.beta_max:
            raise ValueError(f"beta_min must be < beta_max, got {self.beta_min:g} and {self.beta_max:g}")
        schedules.factors(self.schedule, self.steps)
        return self


class StabilityResponse(BaseModel):
    model_config = ConfigDict(extra="forbid")

    landscape: str
    optimizer: str
    label: str
    colour: str
    knob: str = Field(description="the hyperparameter on the beta axis: momentum or beta1")
    hyper: dict[str, float] = Field(description="the optimizer's other knobs, as every cell used them")
    start: list[float]
    steps: int
    schedule: str
    tol: float
    f_star: float
    lrs: list[float] = Field(description="the columns' learning rates")
    betas: list[float] = Field(description="the rows' betas")
    steps_to_tol: list[list[int]] = Field(description="[beta][lr]: the first step with f - f* <= tol, -1 if never")
    diverged: list[list[bool]] = Field(description="[beta][lr]: non-finite, or outside the window at the end")
    loss_gap: list[list[Number]] = Field(description="[beta][lr]: f - f* at the last step (null if non-finite)")
    elapsed_s: float
    queued_s: float


__all__ = ["FormulaRequest", "FormulaResponse", "StabilityRequest", "StabilityResponse", "beta_knob", "BETA_KNOBS"]
