"""``from hand_vae.fit import fit_to_joints`` (README; ``hand_vae.prior.fit``) and ``python -m hand_vae.fit``."""

from typing import Any

from hand_vae.cli.fit import main

__all__ = ["FitResult", "fit_to_joints", "main"]  # noqa: F822 (the first two come from __getattr__)


def __getattr__(name: str) -> Any:
    """``fit_to_joints`` / ``FitResult`` on first use (PEP 562), so ``--help`` answers before roma loads."""
    if name in ("FitResult", "fit_to_joints"):
        from hand_vae.prior import fit

        return getattr(fit, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if __name__ == "__main__":
    raise SystemExit(main())
