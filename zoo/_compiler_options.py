"""The XLA compile options of zoo's own jitted programs, probed once.

On CPU, zoo's training and evaluation programs leave convolutions to XLA's own
kernels (YNNPACK keeps matrix products and reductions); programs that run now
and then (evaluation, ``predict``, initialisers) use XLA's classic loop
emitters, and initialisers optimisation level 1. These are per-program options:
they change no traced computation, and programs a user jits keep XLA's
defaults. Each option is tried once on a trivial program; one this XLA does
not know is left out, with one warning. Measurements: the Performance page.
"""

import functools
import warnings
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.core
import numpy as np

Options = dict[str, Any]

CONVOLUTIONS_TO_XLA: Options = {
    "xla_cpu_experimental_ynn_fusion_type": (
        "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE"
    )
}
CLASSIC_EMITTERS: Options = {"xla_cpu_use_fusion_emitters": False}
OPTIMISATION_LEVEL_1: Options = {"xla_backend_optimization_level": 1}


@functools.cache
def _known(name: str, value: Any) -> bool:
    """Whether this XLA accepts the option; warns once if not."""
    try:
        probe = jax.jit(lambda x: x + 1, compiler_options={name: value})
        probe.lower(np.float32(0)).compile()
    except Exception as error:  # XLA refuses an unknown option: any error
        warnings.warn(
            f"zoo: this XLA does not take the compile option {name}={value!r} "
            f"({type(error).__name__}); zoo's programs compile without it.",
            RuntimeWarning,
            stacklevel=2,
        )
        return False
    return True


def _usable(*groups: Options) -> Options:
    return {k: v for g in groups for k, v in g.items() if _known(k, v)}


def compiler_options(backend: str | None = None, *, inference: bool = False) -> Options:
    """The options of zoo's training (or, with ``inference``, evaluation) programs
    on ``backend`` (default: JAX's default backend); ``{}`` off the CPU."""
    backend = jax.default_backend() if backend is None else backend
    if backend != "cpu":
        return {}
    return _usable(CONVOLUTIONS_TO_XLA, *([CLASSIC_EMITTERS] if inference else []))


def initialiser_options(backend: str | None = None) -> Options:
    """The options of zoo's initialisers; ``{}`` off the CPU."""
    backend = jax.default_backend() if backend is None else backend
    if backend != "cpu":
        return {}
    return _usable(OPTIMISATION_LEVEL_1, CLASSIC_EMITTERS)


def _traced(args: Any) -> bool:
    """Whether any argument is a tracer (inside ``jit``, ``grad`` or ``vmap``)."""
    return any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves(args))


class _CompiledWithOptions:
    """``eqx.filter_jit(fun)`` compiled with ``options()`` (read at each call, one
    jit per set). Inside another trace JAX takes no compile options, so there it
    is plain ``eqx.filter_jit`` and the enclosing program's options apply."""

    def __init__(
        self, fun: Callable[..., Any], options: Callable[[], Options], **jit_kwargs: Any
    ) -> None:
        self._fun, self._options, self._jit_kwargs = fun, options, jit_kwargs
        self._plain = eqx.filter_jit(fun, **jit_kwargs)
        self._tuned: dict[tuple[tuple[str, Any], ...], Any] = {}
        functools.update_wrapper(self, fun)

    def _pick(self, args: Any) -> Any:
        options = {} if _traced(args) else self._options()
        if not options:
            return self._plain
        key = tuple(sorted(options.items()))
        if key not in self._tuned:
            jit: Any = eqx.filter_jit  # its overloads do not list jax.jit's options
            self._tuned[key] = jit(
                self._fun, compiler_options=options, **self._jit_kwargs
            )
        return self._tuned[key]

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        jitted = self._pick((args, kwargs))
        if jitted is self._plain:
            return jitted(*args, **kwargs)
        try:
            return jitted(*args, **kwargs)
        except ValueError:
            # Inside another trace with no traced argument (only closed-over
            # values): JAX refuses the options. Plain jit runs it there, and
            # raises the same error again if it was a real one.
            return self._plain(*args, **kwargs)

    def lower(self, *args: Any, **kwargs: Any) -> Any:
        """Lower for the current backend (``jax.stages.Lowered``)."""
        return self._pick((args, kwargs)).lower(*args, **kwargs)


def jit_with_options(
    options: Callable[[], Options], **jit_kwargs: Any
) -> Callable[[Callable[..., Any]], Any]:
    """A decorator: ``eqx.filter_jit(fun, **jit_kwargs)``, compiled with
    ``options()``."""

    def decorate(fun: Callable[..., Any]) -> Any:
        return _CompiledWithOptions(fun, options, **jit_kwargs)

    return decorate
