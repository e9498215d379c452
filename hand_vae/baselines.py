"""Classic pose priors to compare a hand VAE against, all fitted on the same training poses.

* ``GaussianPrior``: one full-covariance Gaussian (MANO-PCA style; exact log-density).
* ``GMMPrior``: a mixture of full-covariance Gaussians fitted by EM (SMPLify style).
* ``NearestNeighbourPrior``: Euclidean distance to the closest training pose in the flat 90-D
  axis-angle space (Pose-NDF style, without the learned field); a score, not a density.

Every prior exposes ``energy(x) -> (B,)`` (lower = more plausible), the same contract as the VAEs.
Densities also expose ``log_prob(x) -> (B,)`` in nats. Maths runs in float64: the covariances of
real hand poses are badly conditioned (tremor-level variances next to radian-level ones).
"""

from __future__ import annotations

import logging
import math

import torch

from hand_vae.gaussian import SCALES, fit_gaussian, gaussian_log_prob, tune_gaussian
from hand_vae.rotations import to_flat

log = logging.getLogger(__name__)

# Added to every covariance diagonal, rad²; scikit-learn's ``reg_covar`` default. It keeps the
# Cholesky factor defined when a dimension never varies (e.g. a constant-hand clip slipped in).
REG_COVAR = 1e-6


def _flat64(x: torch.Tensor) -> torch.Tensor:
    """(B, 90) or (B, 30, 3) -> (B, 90) float64 on CPU."""
    return to_flat(x).detach().to("cpu", torch.float64)


class GaussianPrior:
    """Full-covariance Gaussian: N(mean, scale² · (Σ_ML + reg · I)).

    A prior for new subjects is a frontier, not a point: ``reg`` (a diagonal floor) trades the NLL
    of an unseen subject against sharpness to small off-manifold noise, and ``scale`` widens it
    without changing its ranking of poses. ``GaussianPrior.tuned`` chooses both on validation poses.

    Args:
        reg: added to the covariance diagonal, rad².
        scale: multiplies the standard deviations (the covariance by scale²).
    """

    is_density = True

    def __init__(self, reg: float = REG_COVAR, scale: float = 1.0) -> None:
        self.reg, self.scale = reg, scale
        self.mean: torch.Tensor | None = None  # (D,)
        self.cov: torch.Tensor | None = None  # (D, D), Σ_ML + reg · I (before the scale)
        self.chol: torch.Tensor | None = None

    def fit(self, x: torch.Tensor) -> GaussianPrior:
        """Fit on poses (N, 90) or (N, 30, 3); returns self."""
        self.mean, self.chol = fit_gaussian(_flat64(x), self.reg)
        self.cov = self.chol @ self.chol.T
        return self

    @classmethod
    def tuned(cls, x: torch.Tensor, val: torch.Tensor) -> GaussianPrior:
        """The Gaussian of poses x (N, 90) with floor and scale chosen on val (M, 90) by
        ``gaussian.tune_gaussian``, the same search the VAEs' whitening uses; settings in ``.settings``."""
        mean, chol, settings = tune_gaussian(_flat64(x), _flat64(val))
        prior = cls(settings["floor"], settings["scale"])
        prior.mean, prior.chol = mean, chol / settings["scale"]  # stored before the scale, as fit() does
        prior.cov = prior.chol @ prior.chol.T
        prior.settings = settings
        return prior

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Exact log-density, (B,) nats (float64)."""
        if self.chol is None:
            raise RuntimeError("call fit() first")
        return gaussian_log_prob(_flat64(x), self.mean, self.chol * self.scale)

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        """−log p(x), (B,) nats."""
        return -self.log_prob(x)


class GMMPrior:
    """Gaussian mixture with full covariances, fitted by expectation-maximisation.

    k-means++ seeding of the means (Arthur & Vassilvitskii 2007), then EM (Dempster et al. 1977;
    Bishop, PRML §9.2.2) until the mean log-likelihood gains less than ``tol`` nats per pose.
    EM runs in float32 on poses whitened by the training set's own Gaussian (float64): whitening
    turns a condition number of ~1e5 into one float32 handles, and float32 halves EM's time on
    a CPU. The change of variables adds the constant ``−log|det L|`` to every log-density.

    Args:
        n_components: K.
        max_iter: EM iteration cap.
        tol: convergence threshold on the mean log-likelihood, nats per pose.
        reg: added to every component covariance diagonal (in pose space), rad².
        seed: seed of the k-means++ initialisation (the only randomness).
        scale: multiplies every component's standard deviations after fitting.
    """

    is_density = True

    def __init__(
        self,
        n_components: int,
        max_iter: int = 200,
        tol: float = 1e-3,
        reg: float = REG_COVAR,
        seed: int = 0,
        scale: float = 1.0,
    ) -> None:
        if n_components < 1:
            raise ValueError(f"n_components must be >= 1, got {n_components}")
        self.n_components, self.max_iter, self.tol, self.reg = n_components, max_iter, tol, reg
        self.scale = scale
        self.seed = seed
        self.whiten: GaussianPrior | None = None
        self.weights: torch.Tensor | None = None  # (K,)
        self.means: torch.Tensor | None = None  # (K, D), whitened space
        self.chols: torch.Tensor | None = None  # (K, D, D), whitened space
        self.converged = False
        self.n_iter = 0

    def _to_white(self, x: torch.Tensor) -> torch.Tensor:
        """(B, D) float64 -> L⁻¹ (x − m), (B, D) float32."""
        w = torch.linalg.solve_triangular(self.whiten.chol, (x - self.whiten.mean).T, upper=False)
        return w.T.float().contiguous()

    def _init_means(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        N, K = x.shape[0], self.n_components
        idx = [int(torch.randint(N, (1,), generator=g))]
        d2 = (x - x[idx[0]]).square().sum(-1)  # (N,)
        for _ in range(1, K):
            nxt = int(torch.multinomial(d2 / d2.sum(), 1, generator=g)) if d2.sum() > 0 else 0
            idx.append(nxt)
            d2 = torch.minimum(d2, (x - x[nxt]).square().sum(-1))
        return x[idx].clone()  # (K, D)

    def _m_step(self, x: torch.Tensor, resp: torch.Tensor) -> None:
        N, D = x.shape
        nk = resp.sum(0) + 10 * torch.finfo(x.dtype).eps  # (K,)
        self.weights = nk / N
        self.means = resp.T @ x / nk[:, None]  # (K, D)
        cov = torch.empty(self.n_components, D, D, dtype=x.dtype)
        for k in range(self.n_components):  # one (N, D) block at a time keeps memory O(N·D)
            diff = x - self.means[k]  # (N, D)
            cov[k] = (resp[:, k, None] * diff).T @ diff / nk[k]
        self.chols = torch.linalg.cholesky(cov + self._reg_white)

    def _joint(self, xw: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        """log w_k + log N(xw | μ_k, scale² Σ_k) in the whitened space: (B, K)."""
        chols = self.chols * scale
        blocks = [gaussian_log_prob(c, self.means, chols) for c in xw.split(8192)]
        return torch.cat(blocks) + self.weights.log()

    def fit(self, x: torch.Tensor) -> GMMPrior:
        """Fit on poses (N, 90) or (N, 30, 3); returns self."""
        x64 = _flat64(x)
        if x64.shape[0] < max(self.n_components, 2):
            raise ValueError(f"need at least {max(self.n_components, 2)} poses, got {x64.shape[0]}")
        self.whiten = GaussianPrior(reg=self.reg).fit(x64)
        # reg·I in pose space is reg·L⁻¹L⁻ᵀ in the whitened space (so GMM(1) is the Gaussian).
        eye = torch.eye(x64.shape[1], dtype=x64.dtype)
        l_inv = torch.linalg.solve_triangular(self.whiten.chol, eye, upper=False)  # (D, D)
        self._reg_white = (self.reg * l_inv @ l_inv.T).float()
        xw = self._to_white(x64)  # (N, D)
        g = torch.Generator().manual_seed(self.seed)
        # Hard assignment to the nearest k-means++ seed gives the first responsibilities.
        nearest = torch.cdist(xw, self._init_means(xw, g)).argmin(1)
        self._m_step(xw, torch.nn.functional.one_hot(nearest, self.n_components).float())
        prev = -math.inf
        self.converged = False
        for it in range(1, self.max_iter + 1):
            joint = self._joint(xw)  # (N, K)
            ll = torch.logsumexp(joint, 1)  # (N,)
            self._m_step(xw, (joint - ll[:, None]).exp())
            mean_ll = float(ll.double().mean())
            self.n_iter = it
            if mean_ll - prev < self.tol:
                self.converged = True
                break
            prev = mean_ll
        if not self.converged:
            log.warning("GMM(%d) EM did not converge in %d iterations", self.n_components, self.max_iter)
        return self

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log Σ_k w_k N(x | μ_k, Σ_k), (B,) nats (float64)."""
        if self.chols is None:
            raise RuntimeError("call fit() first")
        log_det_l = torch.diagonal(self.whiten.chol).log().sum()
        joint = self._joint(self._to_white(_flat64(x)), self.scale)
        return torch.logsumexp(joint, 1).double() - log_det_l

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        """−log p(x), (B,) nats."""
        return -self.log_prob(x)


class NearestNeighbourPrior:
    """Distance to the nearest training pose, radians in the flat 90-D axis-angle space.

    Args:
        chunk_size: query rows per distance block (memory is chunk_size × N_train × 8 bytes).
    """

    is_density = False

    def __init__(self, chunk_size: int = 2048) -> None:
        self.chunk_size = chunk_size
        self.train: torch.Tensor | None = None  # (N, D) float32, centred
        self.center: torch.Tensor | None = None  # (D,)

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
    """All baselines of the evaluation, fitted on ``train`` (N, 90).

    With ``val``, the Gaussians' floor and scale are chosen on it (``GaussianPrior.tuned``) and the
    GMMs' scale (at the Gaussian's floor); otherwise they keep ``REG_COVAR`` and scale 1. With ``mirror``, a Gaussian on train ∪ swap_and_mirror(train) is
    added (left-right mirroring is the cheapest augmentation a hand prior has).

    Returns:
        name -> fitted prior: ``gaussian``, [``gaussian_mirrored``], ``gmm4``, ``gmm8``,
        ``nearest_neighbour``. Each density carries its chosen settings in ``.settings``
        ({"floor", "scale"[, "val_nll"]}) so reports can state them.
    """
    from hand_vae.rotations import swap_and_mirror_hands

    if val is not None and len(val) == 0:
        val = None
    data = {"gaussian": train}
    if mirror:
        data["gaussian_mirrored"] = torch.cat([train, swap_and_mirror_hands(to_flat(train))])
    priors: dict[str, object] = {}
    for name, x in data.items():
        if val is None:
            priors[name] = GaussianPrior().fit(x)
            priors[name].settings = {"floor": REG_COVAR, "scale": 1.0}
        else:
            priors[name] = GaussianPrior.tuned(x, val)
    # Each floor costs a GMM a full EM fit (minutes on 36k poses): GMMs take the plain Gaussian's
    # val-chosen floor and choose only their scale, which is free.
    floor = priors["gaussian"].settings["floor"]
    for k in (4, 8):
        gmm = GMMPrior(k, seed=seed, reg=floor).fit(train)
        gmm.settings = {"floor": floor, "scale": 1.0} if val is None else choose_scale(gmm, val)
        priors[f"gmm{k}"] = gmm
    priors["nearest_neighbour"] = NearestNeighbourPrior().fit(train)
    return priors
