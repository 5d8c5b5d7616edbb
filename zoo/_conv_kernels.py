"""Which library computes convolutions in zoo's compiled programs on CPU.

XLA:CPU hands some operations to kernel libraries: by default YNNPACK takes
matrix products, reductions and convolutions. On the 2-core CPU of
``docs/benchmarks.md``, XLA's own convolution kernels (Eigen's, threaded over
the cores) train every zoo CNN faster than YNNPACK's, by 3-26 % per step
(``benchmarks/conv_kernels.py``): YNNPACK's are quicker only on a first layer of
one input channel, and they keep one of two cores idle much of the time on the
wider layers. So zoo compiles its own programs (the training step, the
evaluation step, ``predict``) on CPU with YNNPACK kept for matrix products and
reductions and the convolutions left to XLA.

The choice is an XLA compile option, so it applies per program and changes no
traced computation: parameters, checkpoints and the conv path are the same
either way; values agree within float32 rounding. Programs a user jits
directly keep XLA's defaults unless given :func:`compiler_options` too
(``jax.jit(f, compiler_options=zoo.compiler_options())``). The environment
variable ``ZOO_CPU_CONV_KERNELS=ynnpack`` (read at import) keeps YNNPACK's
convolutions in zoo's programs as well, as does an XLA that does not know the
option (it is experimental in XLA; zoo tries it once on a trivial program).
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

_YNN_WITHOUT_CONVOLUTIONS = {
    "xla_cpu_experimental_ynn_fusion_type": (
        "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE"
    )
}


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


def compiler_options(backend: str | None = None) -> dict[str, str]:
    """The XLA options zoo compiles its training and evaluation programs with.

    Args:
        backend: a JAX backend name; ``None`` for ``jax.default_backend()``.

    Returns:
        On CPU (unless ``ZOO_CPU_CONV_KERNELS=ynnpack``), the option that keeps
        YNNPACK for matrix products and reductions and leaves convolutions to
        XLA's own kernels; elsewhere ``{}``. Pass it to ``jax.jit`` as
        ``compiler_options=`` for the same kernels in a program of your own.
    """
    backend = jax.default_backend() if backend is None else backend
    if backend == "cpu" and _kernels == "xla" and _option_known():
        return dict(_YNN_WITHOUT_CONVOLUTIONS)
    return {}


@functools.cache
def _option_known() -> bool:
    """Whether this XLA takes the option (experimental: older and newer
    ``jaxlib`` releases may not); if not, zoo keeps XLA:CPU's defaults."""
    try:
        probe = jax.jit(lambda x: x + 1, compiler_options=_YNN_WITHOUT_CONVOLUTIONS)
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
    """``eqx.filter_jit(fun)``, compiled with :func:`compiler_options` when it can be.

    JAX takes compile options at the top level only, so called inside another
    trace (``jit``, ``grad``, ``vmap``) it runs as plain ``eqx.filter_jit``, and
    the enclosing program's options apply.
    """

    def __init__(self, fun: Callable[..., Any], **jit_kwargs: Any) -> None:
        self._fun, self._jit_kwargs = fun, jit_kwargs
        self._plain = eqx.filter_jit(fun, **jit_kwargs)
        self._tuned: Any = None  # built on first use, when the backend is known
        functools.update_wrapper(self, fun)

    def _pick(self) -> Any:
        options = compiler_options()
        if not options:
            return self._plain
        if self._tuned is None:
            jit: Any = eqx.filter_jit  # its overloads do not list jax.jit's options
            self._tuned = jit(self._fun, compiler_options=options, **self._jit_kwargs)
        return self._tuned

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        jitted = self._pick()
        if jitted is self._plain:
            return jitted(*args, **kwargs)
        return call_with_options(jitted, self._plain, *args, **kwargs)

    def lower(self, *args: Any, **kwargs: Any) -> Any:
        """Lower for the current backend (``jax.stages.Lowered``)."""
        return self._pick().lower(*args, **kwargs)


def jit_with_options(fun: Callable[..., Any], **jit_kwargs: Any) -> Any:
    """``eqx.filter_jit(fun, **jit_kwargs)`` with zoo's :func:`compiler_options`."""
    return _CompiledWithOptions(fun, **jit_kwargs)
