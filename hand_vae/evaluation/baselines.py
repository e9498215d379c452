"""Classic pose priors fitted on the VAE's training poses (docs/design.md §9): Gaussian, Student-t, GMMs and
nearest-neighbour distance. Each has ``energy(x) -> (B,)`` (lower = more plausible); densities also
``log_prob(x)`` in nats. Maths in float64: the covariances of real hand poses are badly conditioned."""

from __future__ import annotations

import logging
import math
import warnings

import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture

from hand_vae.gaussian import SCALES, fit_gaussian, gaussian_log_prob, tune_gaussian
from hand_vae.rotations import swap_and_mirror_hands, to_flat
from hand_vae.student_t import fit_t, t_log_prob, tune_student_t

log = logging.getLogger(__name__)

REG_COVAR = 1e-6  # rad² on every covariance diagonal (sklearn's default): a constant dimension stays PD
DEFAULT_NU = 10.0  # the Student-t's degrees of freedom when there is no validation split to choose on


def _flat64(x: torch.Tensor) -> torch.Tensor:
    """(B, 90) or (B, 30, 3) -> (B, 90) float64 on CPU."""
    return to_flat(x).detach().to("cpu", torch.float64)


class _Density:
    """A density: energy = −log_prob."""

    is_density = True

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        """−log p(x), (B,) nats."""
        return -self.log_prob(x)


class GaussianPrior(_Density):
    """Full-covariance Gaussian N(mean, scale² · (Σ_ML + reg · I)), reg in rad² (MANO-PCA style).

    The floor ``reg`` trades an unseen subject's NLL against sharpness to small noise; ``scale``
    widens it without changing its ranking. ``GaussianPrior.tuned`` chooses both on validation poses.
    """

    nu = math.inf  # the Gaussian is the Student-t's ν = ∞
    _tune = staticmethod(tune_gaussian)

    def __init__(self, reg: float = REG_COVAR, scale: float = 1.0) -> None:
        self.reg, self.scale = reg, scale
        self.mean: torch.Tensor | None = None  # (D,)
        self.chol: torch.Tensor | None = None  # (D, D), Cholesky factor of ``cov``

    @property
    def cov(self) -> torch.Tensor:
        """(D, D) Σ_ML + reg · I (the Student-t's scatter), before the scale."""
        return self.chol @ self.chol.T

    def fit(self, x: torch.Tensor) -> GaussianPrior:
        """Fit on poses (N, 90) or (N, 30, 3); returns self."""
        self.mean, self.chol = fit_gaussian(_flat64(x), self.reg)
        return self

    @classmethod
    def tuned(cls, x: torch.Tensor, val: torch.Tensor) -> GaussianPrior:
        """Fitted on x (N, 90) with the settings ``_tune`` chooses on val (M, 90) (for the Gaussian
        ``gaussian.tune_gaussian``, the VAEs' whitening search), kept in ``.settings``."""
        mean, chol, settings = cls._tune(_flat64(x), _flat64(val))
        prior = cls(
            settings["floor"], settings["scale"], **({"nu": settings["nu"]} if "nu" in settings else {})
        )
        prior.mean, prior.chol = mean, chol / settings["scale"]  # stored before the scale, as fit() does
        prior.settings = settings
        return prior

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Exact log-density, (B,) nats (float64)."""
        if self.chol is None:
            raise RuntimeError("call fit() first")
        return t_log_prob(_flat64(x), self.mean, self.chol * self.scale, self.nu)  # ν = inf: Gaussian


class StudentTPrior(GaussianPrior):
    """Multivariate t_ν(mean, scale² · Σ), Σ the EM scatter with floor ``reg``; ν = inf is the Gaussian.

    ``StudentTPrior.tuned`` chooses ν, floor and scale on validation poses (``student_t.tune_student_t``).
    """

    _tune = staticmethod(tune_student_t)

    def __init__(self, reg: float = REG_COVAR, scale: float = 1.0, nu: float = DEFAULT_NU) -> None:
        super().__init__(reg, scale)
        self.nu = nu

    def fit(self, x: torch.Tensor) -> StudentTPrior:
        """EM fit (ν fixed) on poses (N, 90) or (N, 30, 3); returns self."""
        if math.isinf(self.nu):
            return super().fit(x)
        self.mean, self.chol, _ = fit_t(_flat64(x), self.nu, self.reg)
        return self


class GMMPrior(_Density):
    """Mixture of ``n_components`` full-covariance Gaussians (SMPLify style) by scikit-learn's EM: ``tol`` in
    nats per pose, ``reg`` rad² on every diagonal, ``seed`` for the k-means start (the only randomness);
    ``scale`` multiplies every component's standard deviations after fitting."""

    def __init__(self, n_components: int, max_iter: int = 200, tol: float = 1e-3, reg: float = REG_COVAR,
                 seed: int = 0, scale: float = 1.0) -> None:  # fmt: skip
        if n_components < 1:
            raise ValueError(f"n_components must be >= 1, got {n_components}")
        self.n_components, self.max_iter, self.tol = n_components, max_iter, tol
        self.reg, self.seed, self.scale = reg, seed, scale
        self.chols: torch.Tensor | None = None  # (K, D, D), Cholesky factors of Σ_k + reg · I

    def fit(self, x: torch.Tensor) -> GMMPrior:
        """Fit on poses (N, 90) or (N, 30, 3); returns self."""
        x64 = _flat64(x)
        if x64.shape[0] < max(self.n_components, 2):
            raise ValueError(f"need at least {max(self.n_components, 2)} poses, got {x64.shape[0]}")
        gm = GaussianMixture(self.n_components, covariance_type="full", tol=self.tol, reg_covar=self.reg,
                             max_iter=self.max_iter, random_state=self.seed)  # fmt: skip
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # logged below, once
            gm.fit(x64.numpy())
        self.weights, self.means = torch.from_numpy(gm.weights_), torch.from_numpy(gm.means_)  # (K,), (K, D)
        self.chols = torch.linalg.cholesky(torch.from_numpy(gm.covariances_))
        self.converged, self.n_iter = bool(gm.converged_), int(gm.n_iter_)
        if not self.converged:
            log.warning("GMM(%d) EM did not converge in %d iterations", self.n_components, self.max_iter)
        return self

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log Σ_k w_k N(x | μ_k, scale² Σ_k), (B,) nats (float64)."""
        if self.chols is None:
            raise RuntimeError("call fit() first")
        chols = self.chols * self.scale
        joint = [gaussian_log_prob(c, self.means, chols) for c in _flat64(x).split(8192)]  # (b, K) each
        return torch.logsumexp(torch.cat(joint) + self.weights.log(), 1)


class NearestNeighbourPrior:
    """Distance to the nearest training pose, radians in flat 90-D axis-angle (not a density).

    Args:
        chunk_size: query rows per distance block (memory is chunk_size × N_train × 4 bytes).
    """

    is_density = False

    def __init__(self, chunk_size: int = 2048) -> None:
        self.chunk_size = chunk_size
        self.train: torch.Tensor | None = None  # (N, D) float32, centred

    def fit(self, x: torch.Tensor) -> NearestNeighbourPrior:
        """Store the training poses (N, 90) or (N, 30, 3); returns self."""
        x = to_flat(x).detach().to("cpu", torch.float32)
        # cdist's matrix-product form loses ~1e-7·|x|² to cancellation; centring keeps |x| small.
        self.center = x.mean(0)
        self.train = (x - self.center).contiguous()
        return self

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        """Nearest-neighbour distance, (B,) radians (Euclidean norm over the 90 numbers)."""
        if self.train is None:
            raise RuntimeError("call fit() first")
        q = to_flat(x).detach().to("cpu", torch.float32) - self.center
        out = [torch.cdist(c, self.train).min(1).values for c in q.split(self.chunk_size)]
        return torch.cat(out) if out else q.new_zeros(0)


def choose_scale(prior: GaussianPrior | GMMPrior, val: torch.Tensor) -> dict[str, float]:
    """Set a fitted density's ``scale`` to the one of ``gaussian.SCALES`` with the best NLL on val
    (M, 90), keeping its floor; returns {"floor", "scale", "val_nll"}."""
    nll = {}
    for scale in SCALES:
        prior.scale = scale
        nll[scale] = float(-prior.log_prob(val).mean())
    prior.scale = min(nll, key=nll.get)
    return {"floor": prior.reg, "scale": prior.scale, "val_nll": nll[prior.scale]}


def fit_baselines(
    train: torch.Tensor, seed: int = 0, val: torch.Tensor | None = None, mirror: bool = True
) -> dict[str, object]:
    """Every baseline of the evaluation, fitted on ``train`` (N, 90).

    With ``val``, the Gaussians' floor and scale, the t's ν, floor and scale and the GMMs' scale
    (at the Gaussian's floor) are chosen on it; otherwise ``REG_COVAR``, scale 1, ν = ``DEFAULT_NU``.
    With ``mirror``, the Gaussian and the t are also fitted on train ∪ swap_and_mirror(train). Returns
    name -> fitted prior: ``gaussian``, [``gaussian_mirrored``], ``student_t``, [``student_t_mirrored``],
    ``gmm4``, ``gmm8``, ``nearest_neighbour``; each density carries its settings in ``.settings``
    ({"floor", "scale"[, "nu"][, "val_nll"]}).
    """
    if val is not None and len(val) == 0:
        val = None
    data = {"": train}
    if mirror:
        data["_mirrored"] = torch.cat([train, swap_and_mirror_hands(to_flat(train))])
    priors: dict[str, object] = {}
    for family, cls in (("gaussian", GaussianPrior), ("student_t", StudentTPrior)):
        for suffix, x in data.items():
            if val is None:
                prior = cls().fit(x)
                nu = {"nu": prior.nu} if cls is StudentTPrior else {}
                prior.settings = {"floor": REG_COVAR, "scale": 1.0, **nu}
            else:
                prior = cls.tuned(x, val)
            priors[family + suffix] = prior
    # Each floor costs a GMM a full EM fit: GMMs take the plain Gaussian's val-chosen floor and
    # choose only their scale, which is free.
    floor = priors["gaussian"].settings["floor"]
    for k in (4, 8):
        gmm = GMMPrior(k, seed=seed, reg=floor).fit(train)
        gmm.settings = {"floor": floor, "scale": 1.0} if val is None else choose_scale(gmm, val)
        priors[f"gmm{k}"] = gmm
    priors["nearest_neighbour"] = NearestNeighbourPrior().fit(train)
    return priors
