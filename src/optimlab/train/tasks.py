"""Small real training tasks, each with fixed data, a train/validation split and a stated target.

Every data set ships inside an installed package or is generated from a fixed seed: nothing is
downloaded. The data of a task is the same for every run (``DATA_SEED``); a run's seed changes only
the initial weights and the order of the examples.

=================  ==========================================================  ===================
task               model and data                                              target (validation)
=================  ==========================================================  ===================
digits-mlp         64-64-10 ReLU MLP, scikit-learn digits (8x8, 1797 images)   accuracy >= 0.95
digits-cnn         2 conv layers + linear, the same digits as 1x8x8 images     accuracy >= 0.97
cancer-logreg      logistic regression, breast-cancer data, features UNSCALED  accuracy >= 0.90
sparse-logreg      logistic regression, 200 rare binary features (generated)   accuracy >= 0.92
adding-lstm        LSTM(2->32) on the adding problem, length 20 (generated)    MSE <= 0.01
char-lstm          character LSTM language model on stdlib docstrings          bits/char <= 2.6
shift-char-lstm    small char LSTM; noisy inputs, text switches from docstrings bits/char <= 3.3
                   to stdlib source code half-way (noisy, non-stationary)
diabetes-mlp       HELD OUT: 10-32-1 MLP regression, scikit-learn diabetes     MSE <= 0.6
=================  ==========================================================  ===================

``diabetes-mlp`` is held out (``Task.held_out``): it was added after the defaults and search spaces
were set, was not used to choose any of them, and its default learning rate is the optimizer's
library default, not a tuned one. ``shift-char-lstm`` is non-stationary (``Task.shift``): the
training text changes half-way through every run.

The exact targets are the ``target`` fields of :data:`TASKS`.
"""

from __future__ import annotations

import codecs
import contextlib
import functools
import importlib
import inspect
import io
import math
import warnings
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .._names import lookup

DATA_SEED = 0


@dataclass(frozen=True)
class Data:
    """Train and validation tensors; ``x[i]`` and ``y[i]`` are one example."""

    x_train: Tensor
    y_train: Tensor
    x_val: Tensor
    y_val: Tensor

    @property
    def n_train(self) -> int:
        return len(self.x_train)


@dataclass(frozen=True)
class Task:
    """A training task: data, model, loss, validation metric and the target of that metric.

    ``default_*`` is the tuned default (optimizer, learning rate, gradient-descent mode) with which
    the task reaches its target within ``budget_steps`` (the LR picked by ``optimlab bench`` on the
    grid 1e-4..1, except digits-mlp, where 1e-2 replaces the bench's 3.16e-2 because at that LR
    the accuracy of some seeds falls back below the target late in training; see docs/train.md).
    ``budget_steps`` is also the benchmark's step budget per run.
    """

    name: str
    description: str
    make_data: Callable[[], Data]
    make_model: Callable[[], nn.Module]
    loss: Callable[[Tensor, Tensor], Tensor]
    metric_name: str
    metric: Callable[[Tensor, Tensor], float]
    higher_is_better: bool
    target: float
    default_optimizer: str
    default_lr: float
    default_batch_size: int | None  # None: batch gradient descent (whole training set per step)
    budget_steps: int
    eval_every: int
    held_out: bool = False  # not used to design defaults or search spaces
    shift: Callable[[], Data] | None = None  # training data of the second half of every run

    def data(self) -> Data:
        return _cached_data(self.name)

    def train_tensors(self, step: int, steps: int) -> tuple[Tensor, Tensor]:
        """The training (x, y) for 0-based ``step`` of a ``steps``-step run: the task's data, or,
        for a non-stationary task, the ``shift`` data from step ``steps // 2`` on."""
        data = self.data() if self.shift is None or step < steps // 2 else _cached_shift(self.name)
        return data.x_train, data.y_train

    def reached(self, value: float) -> bool:
        """Whether a validation metric value meets the target."""
        if not math.isfinite(value):
            return False
        return value >= self.target if self.higher_is_better else value <= self.target

    def better(self, a: float, b: float) -> bool:
        """Whether metric value ``a`` is strictly better than ``b`` (non-finite is worst)."""
        if not math.isfinite(a):
            return False
        if not math.isfinite(b):
            return True
        return a > b if self.higher_is_better else a < b

    @property
    def target_text(self) -> str:
        return f"{self.metric_name} {'>=' if self.higher_is_better else '<='} {self.target:g}"


# ----------------------------------------------------------------------------- metrics and losses

def _accuracy(logits: Tensor, y: Tensor) -> float:
    return (logits.argmax(-1) == y).float().mean().item()


def _binary_accuracy(logits: Tensor, y: Tensor) -> float:
    return ((logits > 0).float() == y).float().mean().item()


def _mse(pred: Tensor, y: Tensor) -> float:
    return F.mse_loss(pred, y).item()


def _lm_loss(logits: Tensor, y: Tensor) -> Tensor:
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))


def _bits_per_char(logits: Tensor, y: Tensor) -> float:
    return _lm_loss(logits, y).item() / math.log(2)


# ----------------------------------------------------------------------------- data

def _split(x: Tensor, y: Tensor, val_fraction: float) -> Data:
    g = torch.Generator().manual_seed(DATA_SEED)
    order = torch.randperm(len(x), generator=g)
    n_val = int(round(len(x) * val_fraction))
    val, train = order[:n_val], order[n_val:]
    return Data(x[train], y[train], x[val], y[val])


def digits_data(image: bool = False) -> Data:
    """scikit-learn's bundled 8x8 digits, pixel values scaled from 0..16 to 0..1; 20% validation."""
    from sklearn.datasets import load_digits
    bunch = load_digits()
    x = torch.tensor(bunch.data, dtype=torch.float32) / 16.0
    if image:
        x = x.reshape(-1, 1, 8, 8)
    return _split(x, torch.tensor(bunch.target, dtype=torch.long), 0.2)


def cancer_data() -> Data:
    """scikit-learn's bundled breast-cancer data, 30 features left UNSCALED; 20% validation.

    The features span about 1e-3 (fractal dimension error) to 4e3 (worst area): the seed's
    "features on different scales", an elongated bowl for gradient descent.
    """
    from sklearn.datasets import load_breast_cancer
    bunch = load_breast_cancer()
    x = torch.tensor(bunch.data, dtype=torch.float32)
    return _split(x, torch.tensor(bunch.target, dtype=torch.float32), 0.2)


SPARSE_FEATURES = 200
SPARSE_EXAMPLES = 12000


def _sparse_raw() -> tuple[Tensor, Tensor, Tensor]:
    g = torch.Generator().manual_seed(DATA_SEED)
    p = torch.logspace(math.log10(0.3), math.log10(0.003), SPARSE_FEATURES)
    x = (torch.rand(SPARSE_EXAMPLES, SPARSE_FEATURES, generator=g) < p).float()
    w = 2.0 * torch.randn(SPARSE_FEATURES, generator=g)
    logits = x @ w - 0.5
    y = (torch.rand(SPARSE_EXAMPLES, generator=g) < torch.sigmoid(logits)).float()
    return x, logits, y


def sparse_data() -> Data:
    """Logistic data with rare binary features: feature j is 1 with probability ``p_j``.

    ``p_j`` falls log-uniformly from 0.3 to 0.003, so frequent features have a 100 times larger
    curvature than rare ones (Hessian diagonal ~ p_j / 4): an elongated bowl. True weights
    ``w*_j ~ 2 N(0, 1)`` and bias -0.5; labels ``y ~ Bernoulli(sigmoid(x . w* - 0.5))``.
    9600 train, 2400 validation examples.
    """
    x, _, y = _sparse_raw()
    return _split(x, y, 0.2)


def sparse_bayes_accuracy() -> float:
    """Validation accuracy of the true weights (about 0.942: the best to expect on this data)."""
    _, logits, y = _sparse_raw()
    d = _split(logits, y, 0.2)
    return _binary_accuracy(d.x_val, d.y_val)


ADDING_LENGTH = 20


def adding_data(n_train: int = 6000, n_val: int = 1000, length: int = ADDING_LENGTH) -> Data:
    """The adding problem (Hochreiter & Schmidhuber 1997): sum the two marked numbers.

    Each sequence has ``length`` steps of (value ~ U(0, 1), marker); the marker is 1 at two random
    steps (one in each half) and 0 elsewhere; the target is the sum of the two marked values.
    Predicting the mean (1.0) gives MSE 1/6 ~ 0.167.
    """
    g = torch.Generator().manual_seed(DATA_SEED)
    n = n_train + n_val
    values = torch.rand(n, length, generator=g)
    first = torch.randint(0, length // 2, (n,), generator=g)
    second = torch.randint(length // 2, length, (n,), generator=g)
    marker = torch.zeros(n, length)
    rows = torch.arange(n)
    marker[rows, first] = 1.0
    marker[rows, second] = 1.0
    x = torch.stack([values, marker], dim=-1)
    y = (values * marker).sum(1)
    return Data(x[:n_train], y[:n_train], x[n_train:], y[n_train:])


#: stdlib modules whose docstrings (module, classes, functions) make up the language-model text
TEXT_MODULES = ("textwrap", "string", "json", "collections", "functools", "itertools", "random",
                "statistics", "fractions", "heapq", "bisect", "argparse", "difflib", "csv",
                "calendar", "shutil", "tempfile", "inspect", "pathlib", "logging", "threading",
                "subprocess", "typing", "dataclasses", "enum", "contextlib", "abc", "copy", "pprint")
SEQ_LEN = 64


@functools.lru_cache(maxsize=1)
def stdlib_text(max_chars: int = 300_000) -> str:
    """English text that ships with Python: the Zen of Python (``this``) and stdlib docstrings.

    Read through ``importlib``/``inspect`` (never downloaded); characters outside printable ASCII
    are dropped. The text depends on the Python version (docstrings change between releases).
    """
    with contextlib.redirect_stdout(io.StringIO()):  # importing `this` prints the Zen
        this = importlib.import_module("this")
    parts = [codecs.decode(this.s, "rot13")]
    with warnings.catch_warnings():  # typing.io / typing.re warn when their docstrings are read
        warnings.simplefilter("ignore", DeprecationWarning)
        parts += _docstrings()
    text = "\n\n".join(parts)
    text = "".join(c for c in text if c == "\n" or 32 <= ord(c) < 127)
    return text[:max_chars]


def _docstrings() -> list[str]:
    parts = []
    for name in TEXT_MODULES:
        module = importlib.import_module(name)
        doc = inspect.getdoc(module)
        if doc:
            parts.append(doc)
        for attr in sorted(vars(module)):
            obj = getattr(module, attr)
            if attr.startswith("_") or getattr(obj, "__module__", None) != name:
                continue
            if inspect.isclass(obj) or inspect.isfunction(obj):
                doc = inspect.getdoc(obj)
                if doc:
                    parts.append(doc)
    return parts


def char_vocab() -> str:
    return "".join(sorted(set(stdlib_text())))


def char_data(seq_len: int = SEQ_LEN) -> Data:
    """Non-overlapping windows of ``seq_len + 1`` characters; a random 10% of them is validation.

    ``x`` is a window's first ``seq_len`` character ids, ``y`` the same shifted by one.
    """
    text = stdlib_text()
    vocab = {c: i for i, c in enumerate(char_vocab())}
    ids = torch.tensor([vocab[c] for c in text], dtype=torch.long)
    n = (len(ids) - 1) // seq_len
    windows = torch.stack([ids[i * seq_len:i * seq_len + seq_len + 1] for i in range(n)])
    split = _split(windows, windows, 0.1)
    return Data(split.x_train[:, :-1], split.x_train[:, 1:], split.x_val[:, :-1], split.x_val[:, 1:])


# ----------------------------------------------------------------------------- models

class DigitsCNN(nn.Module):
    """conv3x3(1->16) ReLU, conv3x3(16->32) ReLU, 2x2 max-pool, linear(32*4*4 -> 10)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.fc = nn.Linear(32 * 4 * 4, 10)

    def forward(self, x: Tensor) -> Tensor:
        x = F.max_pool2d(F.relu(self.conv2(F.relu(self.conv1(x)))), 2)
        return self.fc(x.flatten(1))


class LogisticRegression(nn.Module):
    """One linear unit; the output is the logit."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.linear = nn.Linear(features, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x).squeeze(-1)


class AddingLSTM(nn.Module):
    """LSTM(2 -> hidden) over the sequence, linear read-out of the last hidden state."""

    def __init__(self, hidden: int = 32) -> None:
        super().__init__()
        self.lstm = nn.LSTM(2, hidden, batch_first=True)
        self.head = nn.Linear(hidden, 1)

    def forward(self, x: Tensor) -> Tensor:
        out, _ = self.lstm(x)
        return self.head(out[:, -1]).squeeze(-1)


class CharLSTM(nn.Module):
    """Embedding(V, 32) -> LSTM(32 -> hidden) -> linear(hidden -> V): next-character logits."""

    def __init__(self, vocab: int, hidden: int = 128) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, 32)
        self.lstm = nn.LSTM(32, hidden, batch_first=True)
        self.head = nn.Linear(hidden, vocab)

    def forward(self, x: Tensor) -> Tensor:
        out, _ = self.lstm(self.embed(x))
        return self.head(out)


def _source_text(max_chars: int) -> str:
    """Python source code of the stdlib modules of :data:`TEXT_MODULES` (printable ASCII only)."""
    parts = []
    for name in TEXT_MODULES:
        try:
            parts.append(inspect.getsource(importlib.import_module(name)))
        except (OSError, TypeError):  # a frozen or built-in module has no source
            continue
    text = "".join(c for c in "\n".join(parts) if c == "\n" or 32 <= ord(c) < 127)
    return text[:max_chars]


SHIFT_SEQ_LEN = 16
SHIFT_CHARS = 120_000
SHIFT_NOISE = 0.1


def _printable_vocab() -> str:
    return "\n" + "".join(chr(i) for i in range(32, 127))


def _noisy_windows(text: str, seed: int) -> Data:
    """Windows of ``SHIFT_SEQ_LEN + 1`` characters, 10% validation; ``SHIFT_NOISE`` of the INPUT
    characters are replaced by random printable ones (the targets stay clean)."""
    vocab = {c: i for i, c in enumerate(_printable_vocab())}
    ids = torch.tensor([vocab[c] for c in text], dtype=torch.long)
    n = (len(ids) - 1) // SHIFT_SEQ_LEN
    windows = torch.stack([ids[i * SHIFT_SEQ_LEN:i * SHIFT_SEQ_LEN + SHIFT_SEQ_LEN + 1] for i in range(n)])
    split = _split(windows, windows, 0.1)
    g = torch.Generator().manual_seed(seed)

    def noisy(x: Tensor) -> Tensor:
        flip = torch.rand(x.shape, generator=g) < SHIFT_NOISE
        return torch.where(flip, torch.randint(0, len(vocab), x.shape, generator=g), x)
    return Data(noisy(split.x_train[:, :-1]), split.x_train[:, 1:], noisy(split.x_val[:, :-1]), split.x_val[:, 1:])


def shift_char_data() -> Data:
    """Second-half data of ``shift-char-lstm`` as the validation set: stdlib SOURCE code; the
    training tensors here are the first half's (stdlib docstrings), of the same size."""
    first = _noisy_windows(stdlib_text()[:SHIFT_CHARS], DATA_SEED)
    second = _noisy_windows(_source_text(SHIFT_CHARS), DATA_SEED + 1)
    n = min(first.n_train, second.n_train)
    return Data(first.x_train[:n], first.y_train[:n], second.x_val, second.y_val)


def shift_char_second_half() -> Data:
    """The training tensors of the second half of a run (source code), as many as the first half's."""
    first = _noisy_windows(stdlib_text()[:SHIFT_CHARS], DATA_SEED)
    second = _noisy_windows(_source_text(SHIFT_CHARS), DATA_SEED + 1)
    n = min(first.n_train, second.n_train)
    return Data(second.x_train[:n], second.y_train[:n], second.x_val, second.y_val)


def diabetes_data() -> Data:
    """scikit-learn's bundled diabetes regression (442 patients, 10 features); features and target
    standardized over the whole set (predicting the mean gives MSE ~1); 20% validation."""
    from sklearn.datasets import load_diabetes
    bunch = load_diabetes()
    x = torch.tensor(bunch.data, dtype=torch.float32)
    y = torch.tensor(bunch.target, dtype=torch.float32)
    return _split((x - x.mean(0)) / x.std(0), (y - y.mean()) / y.std(), 0.2)


def _diabetes_mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 1), nn.Flatten(0))


def _mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))


# ----------------------------------------------------------------------------- registry

TASKS: dict[str, Task] = {t.name: t for t in [
    Task("digits-mlp", "64-64-10 ReLU MLP on scikit-learn's 8x8 digits",
         functools.partial(digits_data, image=False), _mlp, F.cross_entropy,
         "val accuracy", _accuracy, True, 0.95,
         "adam", 1e-2, 32, budget_steps=600, eval_every=25),
    Task("digits-cnn", "small CNN (2 conv layers) on scikit-learn's 8x8 digits",
         functools.partial(digits_data, image=True), DigitsCNN, F.cross_entropy,
         "val accuracy", _accuracy, True, 0.97,
         "adam", 1e-2, 32, budget_steps=500, eval_every=25),
    Task("cancer-logreg", "logistic regression on breast-cancer data, features unscaled (1e-3 .. 4e3)",
         cancer_data, functools.partial(LogisticRegression, 30), F.binary_cross_entropy_with_logits,
         "val accuracy", _binary_accuracy, True, 0.90,
         "adam", 3e-2, None, budget_steps=1000, eval_every=25),
    Task("sparse-logreg", f"logistic regression on {SPARSE_FEATURES} rare binary features (p = 0.3 .. 0.003)",
         sparse_data, functools.partial(LogisticRegression, SPARSE_FEATURES), F.binary_cross_entropy_with_logits,
         "val accuracy", _binary_accuracy, True, 0.92,
         "adagrad", 1.0, 64, budget_steps=600, eval_every=25),
    Task("adding-lstm", f"LSTM on the adding problem, sequences of length {ADDING_LENGTH}",
         adding_data, AddingLSTM, F.mse_loss,
         "val MSE", _mse, False, 0.01,
         "adam", 1e-2, 64, budget_steps=1500, eval_every=50),
    Task("char-lstm", "character-level LSTM language model on Python stdlib docstrings",
         char_data, lambda: CharLSTM(len(char_vocab())), _lm_loss,
         "val bits/char", _bits_per_char, False, 2.6,
         "adam", 1e-2, 32, budget_steps=800, eval_every=50),
    Task("shift-char-lstm", "small char LSTM, 10% noisy inputs, text switches from docstrings to source code half-way",
         shift_char_data, lambda: CharLSTM(len(_printable_vocab()), hidden=32), _lm_loss,
         "val bits/char", _bits_per_char, False, 3.3,
         "adam", 1e-2, 32, budget_steps=240, eval_every=20, shift=shift_char_second_half),
    Task("diabetes-mlp", "HELD OUT: 10-32-1 ReLU MLP regression on scikit-learn's diabetes data",
         diabetes_data, _diabetes_mlp, F.mse_loss,
         "val MSE", _mse, False, 0.6,
         "adam", 1e-3, 32, budget_steps=300, eval_every=20, held_out=True),
]}


@functools.lru_cache(maxsize=None)
def _cached_data(name: str) -> Data:
    return TASKS[name].make_data()


@functools.lru_cache(maxsize=None)
def _cached_shift(name: str) -> Data:
    return TASKS[name].shift()


def get_task(name: str) -> Task:
    return lookup("task", name, TASKS)
