"""Personal rewards: K basis heads on a frozen reward model's read row, and each user's weights on them.

After LoRe (low-rank reward modelling, Bose et al. 2025): the reward model stays frozen; its head's *read row* ``h``
(the input of its final linear layer, :meth:`~rewardmodel.torch_heads.ScoringModule.forward_with_rows`) feeds K
linear basis heads ``B h + b``, and a user's reward is a point ``w`` of the simplex over them::

    r_w(x) = act(w · (B h(x) + b))

Basis head 0 is the model's own head (its criteria weighed as the card says), frozen, and the *population* weights
are ``e_0``: so a user without a profile, or below ``min_judgements``, gets exactly the plain reward. The other
heads are fitted by ``rewardserve personalize fit`` (:mod:`training.personalize`) on judgements that carry a user;
a user's weights are fitted here, by :func:`fit_weights`: a logistic regression on the simplex over the user's
pairs, pulled towards the population weights (a new user moves only as far as their judgements carry them).

A user then costs K floats, and a personal score one dot product more than the plain score. The heads live in the
bundle (``personal.safetensors``, hashed by the card like every file) and the card's ``personalization`` record
says K, what they were fitted on, and the held-out figures.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from rewardmodel.errors import BundleError

PERSONAL_FILE = "personal.safetensors"
MIN_JUDGEMENTS = 5
"""Below this many pairs a user keeps the population weights (the card may say otherwise)."""
PRIOR_STRENGTH = 2.0
"""How many pairs' worth of pull towards the population weights a user's fit has."""

Floats = npt.NDArray[np.float64]
Item = tuple[Any, str]
"""A judged (prompt, completion)."""
RowsOf = Callable[[Sequence[Item]], Awaitable[Floats]]
"""The read rows ``(n, H)`` of items, by the model whose basis heads they feed: what the service gives the feedback
stage to refit profiles with."""


@dataclass(frozen=True, eq=False)
class BasisHeads:
    """K linear heads on the read row; head 0 is the model's own."""

    weight: Floats
    """``(K, H)``."""
    bias: Floats
    """``(K,)``."""
    activation: Literal["none", "sigmoid"] = "none"
    min_judgements: int = MIN_JUDGEMENTS

    def __post_init__(self) -> None:
        if self.weight.ndim != 2 or self.bias.shape != (self.weight.shape[0],) or self.weight.shape[0] < 2:
            raise BundleError(f"basis heads must be (K ≥ 2, H) weights and K biases; got {self.weight.shape} and "
                              f"{self.bias.shape}")
        if not (np.isfinite(self.weight).all() and np.isfinite(self.bias).all()):
            raise BundleError("the basis heads hold NaN/inf; refit them (rewardserve personalize fit)")

    @property
    def k(self) -> int:
        """Number of heads."""
        return int(self.weight.shape[0])

    @property
    def width(self) -> int:
        """Length of the read row they take."""
        return int(self.weight.shape[1])

    @property
    def population(self) -> Floats:
        """The weights of a user the heads know nothing of: the model's own head alone."""
        return np.eye(self.k)[0]

    @property
    def id(self) -> str:
        """Content id: profiles are fitted against one set of heads, and kept under this id."""
        digest = hashlib.sha256(self.weight.astype("<f8").tobytes() + self.bias.astype("<f8").tobytes())
        return digest.hexdigest()[:16]

    def outputs(self, rows: npt.ArrayLike) -> Floats:
        """``(n, K)``: every head's output on ``(n, H)`` read rows (before the activation)."""
        rows = np.asarray(rows, dtype=np.float64)
        if rows.ndim != 2 or rows.shape[1] != self.width:
            raise BundleError(f"the basis heads read rows of {self.width}; the model gave {rows.shape}: the heads "
                              "were fitted on another model (refit them)")
        return rows @ self.weight.T + self.bias

    def reward(self, rows: npt.ArrayLike, weights: npt.ArrayLike) -> Floats:
        """``(n,)``: the reward of ``weights`` (a point of the simplex) on ``(n, H)`` read rows."""
        mixed = self.outputs(rows) @ np.asarray(weights, dtype=np.float64)
        return 1.0 / (1.0 + np.exp(-mixed)) if self.activation == "sigmoid" else mixed

    def save(self, root: Path) -> Path:
        """Write the heads into the bundle at ``root`` (the caller rewrites the card, which hashes the file)."""
        from safetensors.numpy import save_file

        path = root / PERSONAL_FILE
        save_file({"weight": np.ascontiguousarray(self.weight), "bias": np.ascontiguousarray(self.bias)}, str(path))
        return path

    @classmethod
    def load(cls, root: Path, record: dict[str, Any]) -> BasisHeads:
        """The heads the card's ``personalization`` ``record`` names, from the bundle at ``root``."""
        from safetensors.numpy import load_file

        path = root / record.get("file", PERSONAL_FILE)
        try:
            tensors = load_file(str(path))
        except (OSError, ValueError) as exc:
            raise BundleError(f"cannot read the basis heads {path}: {exc}; refit them (rewardserve personalize "
                              "fit)") from exc
        return cls(tensors["weight"].astype(np.float64), tensors["bias"].astype(np.float64),
                   record.get("activation", "none"), int(record.get("min_judgements", MIN_JUDGEMENTS)))


@dataclass(frozen=True)
class Profile:
    """One user's weights on one set of basis heads."""

    user: str
    basis: str
    """The heads' :attr:`BasisHeads.id`."""
    weights: tuple[float, ...]
    judgements: int
    """The pairs they were fitted from."""


def fit_profile(basis: BasisHeads, user: str, better_rows: npt.ArrayLike, worse_rows: npt.ArrayLike) -> Profile:
    """The user's profile from the read rows of the better and worse completion of each of their pairs: the
    population's weights below the heads' ``min_judgements`` pairs, else :func:`fit_weights`."""
    better, worse = np.asarray(better_rows, dtype=np.float64), np.asarray(worse_rows, dtype=np.float64)
    n = len(better)
    weights = basis.population
    if n >= basis.min_judgements:
        weights = fit_weights(basis.outputs(better) - basis.outputs(worse), basis.population)
    return Profile(user, basis.id, tuple(float(w) for w in weights), n)


class ItemTable:
    """Distinct (prompt, completion) items, each kept once, by the index pairs refer to: a profile's rows are read
    once per item however many pairs it is in."""

    def __init__(self) -> None:
        self.items: list[Item] = []
        self._index: dict[tuple[str, str], int] = {}

    def at(self, prompt: Any, completion: str) -> int:
        """The item's index, adding it when new (a chat prompt is keyed by its repr)."""
        key = (repr(prompt), completion)
        if key not in self._index:
            self._index[key] = len(self.items)
            self.items.append((prompt, completion))
        return self._index[key]


def bundle_basis(root: Path, personalization: dict[str, Any]) -> BasisHeads:
    """The basis heads of the bundle at ``root`` whose card's ``personalization`` record is given; says how to fit
    them when it has none."""
    if not personalization:
        raise BundleError(f"{root} has no basis heads: fit them with `rewardserve personalize fit --model {root} "
                          "--data …`")
    return BasisHeads.load(root, personalization)


def own_head(weight: npt.ArrayLike, bias: npt.ArrayLike, criteria_weights: npt.ArrayLike | None = None
             ) -> tuple[Floats, float]:
    """The model's reward as one linear head ``(H,), b``: its final layer ``(C, H), (C,)``, its outputs weighed
    by the card's criteria weights when it has C > 1."""
    w = np.atleast_2d(np.asarray(weight, dtype=np.float64))
    b = np.atleast_1d(np.asarray(bias, dtype=np.float64))
    mix = np.ones(1) if criteria_weights is None else np.asarray(criteria_weights, dtype=np.float64)
    if mix.shape != (w.shape[0],):
        raise BundleError(f"the head has {w.shape[0]} outputs and the card {mix.shape[0]} criteria weights")
    return mix @ w, float(mix @ b)


def project_simplex(v: Floats) -> Floats:
    """The point of the probability simplex nearest ``v`` (Euclidean; Duchi et al. 2008)."""
    u = np.sort(v)[::-1]
    cumulative = np.cumsum(u) - 1.0
    ks = np.arange(1, len(v) + 1)
    rho = np.nonzero(u - cumulative / ks > 0)[0][-1]
    return np.maximum(v - cumulative[rho] / (rho + 1), 0.0)


def fit_weights(margins: npt.ArrayLike, prior: npt.ArrayLike, strength: float = PRIOR_STRENGTH,
                steps: int = 300) -> Floats:
    """A user's weights: ``argmin_w  Σ log(1 + exp(−w·m_i)) + strength·‖w − prior‖²`` over the simplex, where
    ``m_i`` ``(n, K)`` are the heads' outputs on the better completion of each of the user's pairs minus the worse.

    Projected gradient descent with the step 1/L of the objective's smoothness; K is small (8), so a few hundred
    steps take about a millisecond for a hundred pairs."""
    m = np.asarray(margins, dtype=np.float64)
    w0 = np.asarray(prior, dtype=np.float64)
    if m.ndim != 2 or m.shape[1] != len(w0):
        raise ValueError(f"margins must be (pairs, {len(w0)}); got {m.shape}")
    lipschitz = 0.25 * float(np.linalg.norm(m, 2) ** 2 if len(m) else 0.0) + 2 * strength
    step = 1.0 / max(lipschitz, 1e-9)
    w = w0.copy()
    for _ in range(steps):
        z = m @ w
        grad = -(m.T @ (1.0 / (1.0 + np.exp(np.clip(z, -50, 50))))) + 2 * strength * (w - w0)
        w = project_simplex(w - step * grad)
    return w


