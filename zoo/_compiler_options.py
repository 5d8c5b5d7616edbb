"""How zoo asks XLA:CPU to compile its programs: kernel libraries and emitters.

Two XLA compile options, each measured on the 2-core CPU of
``docs/benchmarks.md``:

* **Convolutions to XLA's own kernels**, in every program of zoo's. XLA:CPU
  hands some operations to kernel libraries: by default YNNPACK takes matrix
  products, reductions and convolutions. XLA's own convolution kernels (Eigen's,
  threaded over the cores) train ``cnn`` and the ResNets 10-26 % faster per
  step (``benchmarks/conv_kernels.py``; ``lenet5`` and ``stax_cnn`` move by -3
  to +8 %): YNNPACK's are quicker only on a first layer of one input channel,
  and they keep one of two cores idle much of the time on the wider layers. So
  zoo keeps YNNPACK for matrix products and reductions and leaves convolutions
  to XLA.
* **XLA's classic loop emitters**, in the programs that run once or now and
  then: evaluation, ``predict``, the initialisers and the optimiser's initial
  state. XLA:CPU generates elementwise code with its newer fusion emitters by
  default; the classic ones compile the same program in 0.5-0.8x the time
  (``cnn``'s evaluation step: 0.21 s instead of 0.39 s) and ran it as fast. A
  training step keeps the default: there the classic ones saved as much
  compile time but ran the step 3-6 % slower.

Both are compile options, so they apply per program and change no traced
computation: parameters, checkpoints and the conv path are the same either way,
and values agree within float32 rounding (the initialisers draw the same bits).
Programs a user jits directly keep XLA's defaults unless given
:func:`compiler_options` too. The environment variable
``ZOO_CPU_CONV_KERNELS=ynnpack`` (read at import) keeps XLA's defaults in zoo's
training and evaluation programs, and an XLA that does not know an option goes
without it (both are internal to XLA; zoo tries each once on a trivial
program).
"""

import functools
import os
from collections.abc import Callable
from typing import Any, Literal, cast

import equinox as eqx
import jax
import numpy as np

CpuConvKernels = Literal["xla", "ynnpack"]
"""``"xla"``: XLA's own convolution kernels; ``"ynnpack"``: XLA:CPU's default."""

Options = dict[str, Any]

_YNN_WITHOUT_CONVOLUTIONS: Options = {
    "xla_cpu_experimental_ynn_fusion_type": (
        "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE"
    )
}
_CLASSIC_EMITTERS: Options = {"xla_cpu_use_fusion_emitters": False}
_INITIALISERS: Options = {"xla_backend_optimization_level": 1}
"""Initialisers run once: XLA:CPU's optimisation level 1 compiles them in a
third of the time of its default and draws the same bits."""


def _parse(value: str) -> CpuConvKernels:
    setting = value.strip().lower()
    if setting not in ("xla", "ynnpack"):
        raise ValueError(
            f"ZOO_CPU_CONV_KERNELS must be 'xla' or 'ynnpack', got {value!r}."
        )
    return cast(CpuConvKernels, setting)


_kernels: CpuConvKernels = _parse(os.environ.get("ZOO_CPU_CONV_KERNELS", "xla"))


def cpu_conv_kernels() -> CpuConvKernels:
    """Which convolution kernels zoo asks XLA:CPU for (``ZOO_CPU_CONV_KERNELS``).

    ``"xla"`` takes effect only where XLA knows the option:
    :func:`compiler_options` says what zoo's programs are compiled with.
    """
    return _kernels


def compiler_options(backend: str | None = None, *, inference: bool = False) -> Options:
    """The XLA options zoo compiles its training and evaluation programs with.

    Args:
        backend: a JAX backend name; ``None`` for ``jax.default_backend()``.
        inference: for a program that runs now and then rather than for every
            batch (zoo's evaluation step and ``predict``).

    Returns:
        On CPU (unless ``ZOO_CPU_CONV_KERNELS=ynnpack``), the option that keeps
        YNNPACK for matrix products and reductions and leaves convolutions to
        XLA's own kernels, and with ``inference`` the one for XLA's classic
        loop emitters; elsewhere ``{}``. Pass it to ``jax.jit`` as
        ``compiler_options=`` for the same code in a program of your own.
    """
    backend = jax.default_backend() if backend is None else backend
    if backend != "cpu" or _kernels != "xla":
        return {}
    wanted = [_YNN_WITHOUT_CONVOLUTIONS] + ([_CLASSIC_EMITTERS] if inference else [])
    return {k: v for options in wanted if _known(options) for k, v in options.items()}


def initialiser_options(backend: str | None = None) -> Options:
    """The XLA options of zoo's initialisers: on CPU optimisation level 1 and
    the classic loop emitters (where XLA knows them), elsewhere ``{}``."""
    backend = jax.default_backend() if backend is None else backend
    if backend != "cpu":
        return {}
    return {**_INITIALISERS, **(_CLASSIC_EMITTERS if _known(_CLASSIC_EMITTERS) else {})}


def _known(options: Options) -> bool:
    """Whether this XLA takes ``options`` (internal to XLA: older and newer
    ``jaxlib`` releases may not); if not, zoo keeps XLA:CPU's defaults."""
    return _options_known(tuple(options.items()))


@functools.cache
def _options_known(options: tuple[tuple[str, Any], ...]) -> bool:
    try:
        probe = jax.jit(lambda x: x + 1, compiler_options=dict(options))
        probe.lower(np.float32(0)).compile()
    except Exception:  # XLA refuses unknown options: any error means "not here"
        return False
    return True


def call_with_options(
    optioned: Callable[..., Any], plain: Callable[..., Any], *args: Any, **kwargs: Any
) -> Any:
    """``optioned(*args, **kwargs)``, a jit with compile options, or ``plain``,
    the same jit without them, where JAX refuses options: inside another trace
    (``jit``, ``grad``, ``vmap``), whose own options then apply."""
    try:
        return optioned(*args, **kwargs)
    except ValueError as error:
        if "compiler_options" not in str(error):  # options are for top level
            raise
        return plain(*args, **kwargs)


class _CompiledWithOptions:
    """``eqx.filter_jit(fun)``, compiled with ``options()`` when it can be (one
    jit per set of options, built on first use: the backend is known then).

    JAX takes compile options at the top level only, so called inside another
    trace (``jit``, ``grad``, ``vmap``) it runs as plain ``eqx.filter_jit``, and
    the enclosing program's options apply.
    """

    def __init__(
        self, fun: Callable[..., Any], options: Callable[[], Options], **jit_kwargs: Any
    ) -> None:
        self._fun, self._options, self._jit_kwargs = fun, options, jit_kwargs
        self._plain = eqx.filter_jit(fun, **jit_kwargs)
        self._tuned: dict[tuple[tuple[str, Any], ...], Any] = {}
        functools.update_wrapper(self, fun)

    def _pick(self) -> Any:
        options = self._options()
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
        jitted = self._pick()
        if jitted is self._plain:
            return jitted(*args, **kwargs)
        return call_with_options(jitted, self._plain, *args, **kwargs)

    def lower(self, *args: Any, **kwargs: Any) -> Any:
        """Lower for the current backend (``jax.stages.Lowered``)."""
        return self._pick().lower(*args, **kwargs)


def jit_with_options(
    options: Callable[[], Options], **jit_kwargs: Any
) -> Callable[[Callable[..., Any]], Any]:
    """A decorator: ``eqx.filter_jit(fun, **jit_kwargs)``, compiled with
    ``options()`` (read at each call, so the backend need not be known yet)."""

    def decorate(fun: Callable[..., Any]) -> Any:
        return _CompiledWithOptions(fun, options, **jit_kwargs)

    return decorate
